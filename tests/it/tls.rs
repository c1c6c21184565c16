//! `https://` endpoints: ringway's TLS client against a TLS-terminating front (rustls,
//! a CA made here with rcgen) before a plain mock. The front opens one mock connection per
//! TLS connection, so the mock's accepted connections count ringway's TLS connections.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection};

use crate::harness::*;

/// A CA, and a certificate for 127.0.0.1 and localhost that it signed.
struct Pki {
    ca_pem: String,
    ca_der: CertificateDer<'static>,
    cert: CertificateDer<'static>,
    key_der: Vec<u8>,
    cert_pem: String,
    key_pem: String,
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    Pki {
        ca_pem: ca.pem(),
        ca_der: ca.der().clone(),
        cert: cert.der().clone(),
        key_der: key.serialize_der(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The front's server configuration: `pki`'s certificate; with `client_ca`, client
/// certificates signed by it are required.
fn server_config(pki: &Pki, client_ca: Option<&Pki>) -> Arc<ServerConfig> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            roots.add(ca.ca_der.clone()).unwrap();
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
    };
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.key_der.clone()));
    Arc::new(
        builder
            .with_single_cert(vec![pki.cert.clone()], key)
            .unwrap(),
    )
}

type Live = Arc<Mutex<(ServerConnection, TcpStream)>>;

/// The TLS-terminating front: `trusted`'s certificate, or `other`'s once `untrusted`
/// is set (for the connections accepted after that).
struct Front {
    addr: SocketAddr,
    accepted: Arc<AtomicU64>,
    untrusted: Arc<AtomicBool>,
    live: Arc<Mutex<Vec<Live>>>,
    stop: Arc<AtomicBool>,
}

impl Front {
    fn start(upstream: SocketAddr, trusted: Arc<ServerConfig>, other: Arc<ServerConfig>) -> Front {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let front = Front {
            addr: listener.local_addr().unwrap(),
            accepted: Arc::default(),
            untrusted: Arc::default(),
            live: Arc::default(),
            stop: Arc::default(),
        };
        let (accepted, untrusted, live, stop) = (
            front.accepted.clone(),
            front.untrusted.clone(),
            front.live.clone(),
            front.stop.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let Ok((tcp, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                tcp.set_nonblocking(false).unwrap();
                tcp.set_nodelay(true).unwrap();
                accepted.fetch_add(1, Ordering::Relaxed);
                let config = if untrusted.load(Ordering::Relaxed) {
                    other.clone()
                } else {
                    trusted.clone()
                };
                let conn = ServerConnection::new(config).unwrap();
                let shared: Live = Arc::new(Mutex::new((conn, tcp.try_clone().unwrap())));
                live.lock().unwrap().push(shared.clone());
                relay(tcp, upstream, shared);
            }
        });
        front
    }

    /// Every open connection rolls its keys and asks ringway to (TLS 1.3 KeyUpdate).
    fn key_update_all(&self) {
        for c in self.live.lock().unwrap().iter() {
            let mut c = c.lock().unwrap();
            let (conn, tcp) = &mut *c;
            if conn.refresh_traffic_keys().is_ok() {
                flush(conn, tcp);
            }
        }
    }

    /// Every open connection sends close_notify, its TCP stream left open.
    fn close_notify_all(&self) {
        for c in self.live.lock().unwrap().iter() {
            let mut c = c.lock().unwrap();
            let (conn, tcp) = &mut *c;
            conn.send_close_notify();
            flush(conn, tcp);
        }
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn flush(conn: &mut ServerConnection, tcp: &mut TcpStream) {
    while conn.wants_write() {
        if conn.write_tls(tcp).is_err() {
            return;
        }
    }
}

/// Two threads per connection: ringway → mock decrypts, mock → ringway encrypts.
fn relay(tcp: TcpStream, upstream: SocketAddr, shared: Live) {
    let mut up = TcpStream::connect(upstream).unwrap();
    up.set_nodelay(true).unwrap();
    let mut up_read = up.try_clone().unwrap();
    let mut from_client = tcp;
    let to_client = shared.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0; 32 * 1024];
        loop {
            let n = match from_client.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let mut plain = Vec::new();
            let mut c = shared.lock().unwrap();
            let (conn, tcp) = &mut *c;
            let mut rest = &buf[..n];
            let mut failed = false;
            while !rest.is_empty() && !failed {
                failed = conn.read_tls(&mut rest).is_err() || conn.process_new_packets().is_err();
                let _ = conn.reader().read_to_end(&mut plain);
            }
            flush(conn, tcp);
            drop(c);
            if failed || up.write_all(&plain).is_err() {
                break;
            }
        }
        let _ = up.shutdown(Shutdown::Write);
    });
    std::thread::spawn(move || {
        let mut buf = vec![0; 32 * 1024];
        loop {
            let n = up_read.read(&mut buf).unwrap_or(0);
            let mut c = to_client.lock().unwrap();
            let (conn, tcp) = &mut *c;
            if n == 0 {
                conn.send_close_notify();
                flush(conn, tcp);
                let _ = tcp.shutdown(Shutdown::Write);
                return;
            }
            conn.writer().write_all(&buf[..n]).unwrap();
            flush(conn, tcp);
        }
    });
}

/// ringway in front of one https endpoint "tls" at `front`, with `keys` added to it.
fn proxy_to(front: &Front, keys: &str) -> ringway::Server {
    let text = config_text(&[Ep::at("tls", front.addr)], "", "");
    let plain = format!("url = \"http://{}\"\n", front.addr);
    assert!(text.contains(&plain));
    let text = text.replace(
        &plain,
        &format!("url = \"https://{}\"\n{keys}\n", front.addr),
    );
    proxy_from(&text)
}

fn file_key(name: &str, path: &TempFile) -> String {
    format!("{name} = {:?}", path.0.to_str().unwrap())
}

#[test]
fn chat_and_stream_over_tls_on_one_pooled_connection() {
    let mock = mock("m");
    let (good, other) = (pki(), pki());
    let front = Front::start(
        mock.addr(),
        server_config(&good, None),
        server_config(&other, None),
    );
    let ca = TempFile::new(&good.ca_pem);
    let proxy = proxy_to(&front, &file_key("tls_ca_file", &ca));
    let accepted = mock.stats().connections_accepted();
    let mut client = Client::connect(proxy.local_addr());
    for _ in 0..3 {
        let r = client.post_json("/v1/chat/completions", &chat("llama3.2:latest", false), "");
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.json()["choices"][0]["message"]["content"].is_string());
        let r = client.post_json(
            "/v1/chat/completions",
            &chat("llama3.2:latest", true),
            "X-Mock-Tokens: 5\r\n",
        );
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.complete);
        assert!(r.text().contains("data: [DONE]"), "{}", r.text());
    }
    // Session tickets came after the handshake: they did not spoil the pooled connection.
    assert_eq!(mock.stats().connections_accepted() - accepted, 1);
}

#[test]
fn a_key_update_while_pooled_is_answered_and_the_connection_reused() {
    let mock = mock("m");
    let (good, other) = (pki(), pki());
    let front = Front::start(
        mock.addr(),
        server_config(&good, None),
        server_config(&other, None),
    );
    let ca = TempFile::new(&good.ca_pem);
    let proxy = proxy_to(&front, &file_key("tls_ca_file", &ca));
    let accepted = mock.stats().connections_accepted();
    let mut client = Client::connect(proxy.local_addr());
    let r = client.post_json("/v1/chat/completions", &chat("llama3.2:latest", false), "");
    assert_eq!(r.status, 200, "{}", r.text());
    front.key_update_all();
    std::thread::sleep(Duration::from_millis(50));
    for _ in 0..2 {
        let r = client.post_json("/v1/chat/completions", &chat("llama3.2:latest", false), "");
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(mock.stats().connections_accepted() - accepted, 1);
}

#[test]
fn a_close_notify_while_pooled_is_not_reused() {
    let mock = mock("m");
    let (good, other) = (pki(), pki());
    let front = Front::start(
        mock.addr(),
        server_config(&good, None),
        server_config(&other, None),
    );
    let ca = TempFile::new(&good.ca_pem);
    let proxy = proxy_to(&front, &file_key("tls_ca_file", &ca));
    let accepted = mock.stats().connections_accepted();
    let mut client = Client::connect(proxy.local_addr());
    let r = client.post_json("/v1/chat/completions", &chat("llama3.2:latest", false), "");
    assert_eq!(r.status, 200, "{}", r.text());
    front.close_notify_all();
    std::thread::sleep(Duration::from_millis(50));
    let r = client.post_json("/v1/chat/completions", &chat("llama3.2:latest", false), "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        mock.stats().connections_accepted() - accepted,
        2,
        "the closed TLS session was dropped, a new one made"
    );
}

#[test]
fn a_certificate_from_an_untrusted_ca_is_a_502_that_says_so() {
    let mock = mock("m");
    let (good, other) = (pki(), pki());
    let front = Front::start(
        mock.addr(),
        server_config(&good, None),
        server_config(&other, None),
    );
    let ca = TempFile::new(&good.ca_pem);
    let proxy = proxy_to(&front, &file_key("tls_ca_file", &ca));
    // The endpoint's certificate changes to one ringway's CA did not sign.
    front.untrusted.store(true, Ordering::Relaxed);
    let mut client = Client::connect(proxy.local_addr());
    let r = client.post_json("/v1/chat/completions", &chat("llama3.2:latest", false), "");
    assert_eq!(r.status, 502, "{}", r.text());
    let message = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("TLS handshake with 127.0.0.1 failed") && message.contains("certificate"),
        "{message}"
    );
}

#[test]
fn insecure_skip_verify_accepts_any_certificate_and_warns() {
    let mock = mock("m");
    let (good, other) = (pki(), pki());
    // Only ever the certificate of a CA ringway was not told about.
    let front = Front::start(
        mock.addr(),
        server_config(&other, None),
        server_config(&other, None),
    );
    let text = config_text(&[Ep::at("tls", front.addr)], "", "").replace(
        &format!("url = \"http://{}\"\n", front.addr),
        &format!(
            "url = \"https://{}\"\ntls_insecure_skip_verify = true\n",
            front.addr
        ),
    );
    let config = ringway::Config::from_toml(&text, "test").unwrap();
    assert!(
        config
            .warnings
            .iter()
            .any(|w| w.contains("tls_insecure_skip_verify") && w.contains("NOT checked")),
        "{:?}",
        config.warnings
    );
    let proxy = proxy_from(&text);
    let mut client = Client::connect(proxy.local_addr());
    let r = client.post_json("/v1/chat/completions", &chat("llama3.2:latest", false), "");
    assert_eq!(r.status, 200, "{}", r.text());
    drop(good);
}

#[test]
fn a_client_certificate_is_presented() {
    let mock = mock("m");
    let (good, clients) = (pki(), pki());
    let front = Front::start(
        mock.addr(),
        server_config(&good, Some(&clients)),
        server_config(&good, Some(&clients)),
    );
    let ca = TempFile::new(&good.ca_pem);
    let cert = TempFile::new(&clients.cert_pem);
    let key = TempFile::new(&clients.key_pem);
    let keys = [
        file_key("tls_ca_file", &ca),
        file_key("tls_cert_file", &cert),
        file_key("tls_key_file", &key),
    ]
    .join("\n");
    let proxy = proxy_to(&front, &keys);
    let mut client = Client::connect(proxy.local_addr());
    let r = client.post_json("/v1/chat/completions", &chat("llama3.2:latest", false), "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(endpoint_status(&proxy, "tls")["last_check_status"], 200);
}

#[test]
fn a_response_written_on_an_idle_pooled_tls_connection_reaches_no_one() {
    let mock = mock("m");
    let (good, other) = (pki(), pki());
    let front = Front::start(
        mock.addr(),
        server_config(&good, None),
        server_config(&other, None),
    );
    let ca = TempFile::new(&good.ca_pem);
    let proxy = proxy_to(&front, &file_key("tls_ca_file", &ca));
    let mut client = Client::connect(proxy.local_addr());
    let r = client.post_json(
        "/v1/chat/completions",
        &chat("llama3.2:latest", false),
        "X-Mock-Fail: stale-response\r\n",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // The mock writes 100 ms after its answer, on the idle pooled connection.
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..3 {
        let r = client.post_json("/v1/chat/completions", &chat("llama3.2:latest", false), "");
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.header("X-Mock-Stale").is_none(), "served a stale answer");
        assert_eq!(r.json()["object"], "chat.completion", "{}", r.text());
    }
}

#[test]
fn an_answer_before_the_body_is_read_is_relayed_over_tls() {
    let mock = mock("m");
    let (good, other) = (pki(), pki());
    let front = Front::start(
        mock.addr(),
        server_config(&good, None),
        server_config(&other, None),
    );
    let ca = TempFile::new(&good.ca_pem);
    let proxy = proxy_to(&front, &file_key("tls_ca_file", &ca));
    let body = format!(
        r#"{{"model":"llama3.2:latest","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(8 << 20)
    );
    let mut client = Client::connect(proxy.local_addr());
    let started = std::time::Instant::now();
    let r = client.post_json("/v1/chat/completions", &body, "X-Mock-Fail: early-401\r\n");
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["error"]["message"], "early");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let r = client.post_json("/v1/chat/completions", &chat("llama3.2:latest", false), "");
    assert_eq!(r.status, 200, "{}", r.text());
}
