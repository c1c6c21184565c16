//! The TLS listener (`server.tls_cert_file`, `server.tls_key_file`): clients that speak
//! TLS to ringway (a rustls client made here trusting a CA made here with rcgen, curl,
//! the `ringway` binary reloading on SIGHUP), the certificate swapped while a stream
//! runs, and clients that do not speak TLS, send garbage, or never finish their
//! handshake.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SerialNumber};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use crate::harness::*;

type TlsStream = StreamOwned<ClientConnection, TcpStream>;

impl Transport for TlsStream {
    fn tcp(&self) -> &TcpStream {
        &self.sock
    }
}

/// A CA made for one test.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
    pem: String,
}

/// A certificate for 127.0.0.1 and localhost signed by a [`Ca`], and its key.
struct Leaf {
    der: CertificateDer<'static>,
    cert_pem: String,
    key_pem: String,
}

fn ca() -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "ringway test CA");
    let cert = params.self_signed(&key).unwrap();
    let pem = cert.pem();
    Ca { cert, key, pem }
}

/// A leaf certificate named `name` (its subject's common name) with serial `serial`.
fn leaf(ca: &Ca, name: &str, serial: u64) -> Leaf {
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.serial_number = Some(SerialNumber::from(serial));
    let cert = params.signed_by(&key, &ca.cert, &ca.key).unwrap();
    Leaf {
        der: cert.der().clone(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// A directory for one test's PEM files, removed when dropped.
struct Files(PathBuf);

impl Files {
    fn new(tag: &str) -> Files {
        let dir =
            std::env::temp_dir().join(format!("ringway-tls-listener-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Files(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Writes `text` to `name` as a certificate renewal would: a whole new file renamed
    /// over the old one.
    fn replace(&self, name: &str, text: &str) {
        let staged = self.path(&format!("{name}.new"));
        std::fs::write(&staged, text).unwrap();
        std::fs::rename(&staged, self.path(name)).unwrap();
    }

    /// Installs `leaf` as cert.pem and key.pem; returns the `[server]` lines naming them.
    fn install(&self, leaf: &Leaf) -> String {
        self.replace("cert.pem", &leaf.cert_pem);
        self.replace("key.pem", &leaf.key_pem);
        self.server_lines()
    }

    fn server_lines(&self) -> String {
        format!(
            "tls_cert_file = {:?}\ntls_key_file = {:?}\n",
            self.path("cert.pem").to_str().unwrap(),
            self.path("key.pem").to_str().unwrap()
        )
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn client_config(ca: &Ca, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A TLS connection to `addr` with its handshake done (or the error that ended it).
fn tls_connect(addr: SocketAddr, config: Arc<ClientConfig>) -> std::io::Result<TlsStream> {
    let name = ServerName::try_from(addr.ip().to_string()).unwrap();
    let conn = ClientConnection::new(config, name).unwrap();
    let mut stream = StreamOwned::new(conn, tcp_connect(addr));
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    Ok(stream)
}

/// A keep-alive HTTPS client of `addr` trusting `ca`, offering ALPN `http/1.1`.
fn tls_client(addr: SocketAddr, ca: &Ca) -> Client<TlsStream> {
    Client::over(tls_connect(addr, client_config(ca, &[b"http/1.1"])).expect("TLS handshake"))
}

/// The certificate the server presented on `client`'s connection.
fn served_cert(client: &mut Client<TlsStream>) -> CertificateDer<'static> {
    let certs = client.stream().conn.peer_certificates().unwrap();
    certs[0].clone().into_owned()
}

/// The certificate a new connection to `addr` is presented.
fn cert_of_new_connection(addr: SocketAddr, ca: &Ca) -> CertificateDer<'static> {
    served_cert(&mut tls_client(addr, ca))
}

/// Starts ringway with its TLS listener on `files`' certificate, and waits for its first
/// health checks (as `harness::proxy` does, over TLS).
fn tls_proxy(endpoints: &[Ep<'_>], files: &Files, ca: &Ca, server_extra: &str) -> ringway::Server {
    let server = format!("{}{server_extra}", files.server_lines());
    let text = config_text(endpoints, &server, "");
    let config = ringway::Config::from_toml(&text, "test config").expect("valid test config");
    start_settled(config, ca)
}

/// Starts ringway on `config` and waits for its first health checks (as
/// `harness::proxy` does, over TLS).
fn start_settled(config: ringway::Config, ca: &Ca) -> ringway::Server {
    let proxy = ringway::start(config).expect("start ringway");
    let addr = proxy.local_addr();
    let settled = eventually(Duration::from_secs(5), || {
        // A refusal (at `max_connections`, while the last poll's connection closes) is
        // one more poll.
        let Ok(stream) = tls_connect(addr, client_config(ca, &[b"http/1.1"])) else {
            return false;
        };
        let page = Client::over(stream)
            .request(
                format!(
                    "GET /internal/status/endpoints HTTP/1.1\r\nHost: t\r\nX-Api-Key: {TEST_KEY}\r\n\r\n"
                )
                .as_bytes(),
            )
            .json();
        page["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| !e["last_check"].is_null() && !e["model_count"].is_null())
    });
    assert!(settled, "endpoints were not checked within 5 s");
    proxy
}

/// One mock endpoint, a CA and ringway's TLS listener on a certificate it signed.
struct Setup {
    _mock: MockServer,
    ca: Ca,
    first: Leaf,
    files: Files,
    proxy: ringway::Server,
}

fn setup(tag: &str, server_extra: &str) -> Setup {
    let mock = mock("a");
    let ca = ca();
    let first = leaf(&ca, "ringway-first", 1);
    let files = Files::new(tag);
    files.install(&first);
    let proxy = tls_proxy(&[Ep::new("a", &mock)], &files, &ca, server_extra);
    Setup {
        _mock: mock,
        ca,
        first,
        files,
        proxy,
    }
}

fn streamed_chat(tokens: usize, delay_ms: u64) -> String {
    post(
        "/v1/chat/completions",
        &chat("llama3.2:latest", true),
        &format!("X-Mock-Tokens: {tokens}\r\nX-Mock-Token-Delay-Ms: {delay_ms}\r\n"),
    )
}

/// The content of an OpenAI SSE stream's chunks, joined.
fn streamed_text(body: &str) -> String {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| {
            let v: serde_json::Value = serde_json::from_str(d).ok()?;
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(String::from)
        })
        .collect()
}

#[test]
fn a_chat_and_a_stream_go_through_the_tls_listener() {
    let s = setup("chat", "");
    let addr = s.proxy.local_addr();
    let mut client = tls_client(addr, &s.ca);
    assert_eq!(served_cert(&mut client), s.first.der);
    assert_eq!(client.stream().conn.alpn_protocol(), Some(&b"http/1.1"[..]));

    let r = client.post_json("/v1/chat/completions", &chat("llama3.2:latest", false), "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["choices"][0]["message"]["content"].is_string());
    assert_eq!(r.header("x-olla-endpoint"), Some("a"));

    // On the same connection: a stream, relayed chunk by chunk.
    let r = client.request(streamed_chat(8, 60).as_bytes());
    assert_eq!(r.status, 200);
    assert!(r.complete, "the stream was cut");
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("text/event-stream")
    );
    assert!(r.text().contains("data: [DONE]"));
    assert!(r.arrivals.len() >= 4, "{} arrivals", r.arrivals.len());
    let spread = r.arrivals.last().unwrap().0 - r.arrivals[0].0;
    assert!(spread >= Duration::from_millis(200), "batched: {spread:?}");

    // A client that offers no ALPN at all gets HTTP/1.1 too.
    let stream = tls_connect(addr, client_config(&s.ca, &[])).unwrap();
    assert_eq!(stream.conn.alpn_protocol(), None);
    let r = Client::over(stream).get("/internal/health");
    assert_eq!(r.status, 200);
}

#[test]
fn a_client_offering_only_h2_is_refused_in_the_handshake() {
    let s = setup("h2", "");
    let addr = s.proxy.local_addr();
    let Err(e) = tls_connect(addr, client_config(&s.ca, &[b"h2"])) else {
        panic!("an h2-only client got a session");
    };
    assert!(
        e.to_string().contains("NoApplicationProtocol") || e.to_string().contains("no_application"),
        "{e}"
    );
    // Offering both, it gets HTTP/1.1.
    let stream = tls_connect(addr, client_config(&s.ca, &[b"h2", b"http/1.1"])).unwrap();
    assert_eq!(stream.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
}

/// curl gets a 200 over HTTPS, trusting the test CA. Without curl installed the test
/// says so and passes, unless RINGWAY_CURL_TESTS=require (set by `.ci/run`).
#[test]
fn curl_gets_a_200_through_the_tls_listener() {
    if Command::new("curl").arg("--version").output().is_err() {
        let required = std::env::var("RINGWAY_CURL_TESTS").is_ok_and(|v| v == "require");
        assert!(
            !required,
            "RINGWAY_CURL_TESTS=require, but no curl was found"
        );
        eprintln!("skipped: no curl on PATH");
        return;
    }
    let s = setup("curl", "");
    std::fs::write(s.files.path("ca.pem"), &s.ca.pem).unwrap();
    let url = format!("https://{}/v1/chat/completions", s.proxy.local_addr());
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(s.files.path("ca.pem"))
        .args(["-H", "Content-Type: application/json", "-d"])
        .arg(chat("llama3.2:latest", false))
        .args(["-w", "\n%{http_code} %{http_version}", &url])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "curl failed: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (body, status) = stdout.rsplit_once('\n').unwrap();
    assert_eq!(status, "200 1.1", "{stdout}");
    let body: serde_json::Value = serde_json::from_str(body).unwrap();
    assert!(
        body["choices"][0]["message"]["content"].is_string(),
        "{body}"
    );
    // Without the CA, curl refuses the certificate.
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", &url])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn a_reload_swaps_the_certificate_for_new_connections_and_open_streams_carry_on() {
    let s = setup("swap", "");
    let addr = s.proxy.local_addr();
    // A keep-alive connection and a long stream, both on the first certificate.
    let mut idle = tls_client(addr, &s.ca);
    assert_eq!(idle.get("/internal/health").status, 200);
    let mut streaming = tls_client(addr, &s.ca);
    assert_eq!(served_cert(&mut streaming), s.first.der);
    let stream = std::thread::spawn(move || streaming.request(streamed_chat(30, 50).as_bytes()));
    std::thread::sleep(Duration::from_millis(400)); // the stream is under way

    let second = leaf(&s.ca, "ringway-second", 2);
    s.files.install(&second);
    let reloaded_at = Instant::now();
    s.proxy
        .reload_certificates()
        .expect("the new files are good");
    let now_served = cert_of_new_connection(addr, &s.ca);
    assert_eq!(
        now_served, second.der,
        "a new connection still gets the old certificate"
    );
    assert_ne!(now_served, s.first.der);

    // The stream was under way across the reload and ends whole.
    let r = stream.join().unwrap();
    assert_eq!(r.status, 200);
    assert!(r.complete, "the stream was cut");
    assert!(r.text().contains("data: [DONE]"));
    // Token for token what the same stream is, unhurried, on a new connection.
    let again = tls_client(addr, &s.ca).request(streamed_chat(30, 0).as_bytes());
    assert_eq!(streamed_text(&r.text()), streamed_text(&again.text()));
    assert!(!streamed_text(&r.text()).is_empty());
    assert!(r.arrivals[0].0 < reloaded_at && reloaded_at < r.arrivals.last().unwrap().0);
    // The idle connection carries on, on its session.
    assert_eq!(served_cert(&mut idle), s.first.der);
    assert_eq!(idle.get("/internal/health").status, 200);

    // A broken file keeps the certificate in force; the error names the file and key.
    s.files
        .replace("cert.pem", "-----BEGIN CERTIFICATE-----\nbroken\n");
    let e = s.proxy.reload_certificates().unwrap_err();
    assert_eq!(e.key, "server.tls_cert_file");
    assert!(e.message.contains("cert.pem"), "{}", e.message);
    assert_eq!(cert_of_new_connection(addr, &s.ca), second.der);
    // A key that is not the certificate's, likewise.
    let third = leaf(&s.ca, "ringway-third", 3);
    s.files.replace("cert.pem", &third.cert_pem);
    let e = s.proxy.reload_certificates().unwrap_err();
    assert_eq!(e.key, "server.tls_key_file");
    assert!(e.message.contains("key.pem"), "{}", e.message);
    assert_eq!(cert_of_new_connection(addr, &s.ca), second.der);
    // Fixed, the next reload takes it.
    s.files.install(&third);
    s.proxy.reload_certificates().unwrap();
    assert_eq!(cert_of_new_connection(addr, &s.ca), third.der);
}

/// A configuration reload (`Server::reload`, as SIGHUP and `POST /internal/reload` ask)
/// reads the certificate again with the rest of the file, from wherever it now says;
/// a certificate that cannot be used fails the reload and the running one stays; turning
/// TLS off waits for a restart.
#[test]
fn a_configuration_reload_renews_the_certificate() {
    let a = mock("a");
    let ca = ca();
    let first = leaf(&ca, "ringway-first", 1);
    let files = Files::new("config-reload");
    let server = files.install(&first);
    let endpoints = [Ep::new("a", &a)];
    let file = TempFile::new(&config_text(&endpoints, &server, ""));
    let proxy = start_settled(ringway::Config::load(&file.0).unwrap(), &ca);
    let addr = proxy.local_addr();
    assert_eq!(cert_of_new_connection(addr, &ca), first.der);

    // Renewed in place.
    let second = leaf(&ca, "ringway-second", 2);
    files.install(&second);
    proxy.reload().expect("the file is good");
    assert_eq!(cert_of_new_connection(addr, &ca), second.der);

    // Moved: the file names other paths.
    let elsewhere = Files::new("config-reload-moved");
    let third = leaf(&ca, "ringway-third", 3);
    std::fs::write(
        &file.0,
        config_text(&endpoints, &elsewhere.install(&third), ""),
    )
    .unwrap();
    proxy.reload().expect("the moved files are good");
    assert_eq!(cert_of_new_connection(addr, &ca), third.der);
    // ... and a certificate-only reload reads the new paths.
    let fourth = leaf(&ca, "ringway-fourth", 4);
    elsewhere.install(&fourth);
    proxy.reload_certificates().unwrap();
    assert_eq!(cert_of_new_connection(addr, &ca), fourth.der);

    // A key that does not go with the certificate: the reload is refused, naming it.
    elsewhere.replace("key.pem", &first.key_pem);
    let e = proxy.reload().unwrap_err();
    assert!(
        e.contains("server.tls_key_file") && e.contains("key.pem"),
        "{e}"
    );
    assert_eq!(cert_of_new_connection(addr, &ca), fourth.der);
    elsewhere.install(&fourth);

    // POST /internal/reload, over TLS, from loopback.
    let mut client = tls_client(addr, &ca);
    let r =
        client.request(b"POST /internal/reload HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(r.status, 200, "{}", r.text());

    // Without the TLS keys the listener stays TLS until a restart, and says so.
    std::fs::write(&file.0, config_text(&endpoints, "", "")).unwrap();
    let r =
        client.request(b"POST /internal/reload HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.text().contains("server.tls_cert_file changed"),
        "{}",
        r.text()
    );
    assert_eq!(cert_of_new_connection(addr, &ca), fourth.der);
}

/// Every shard presents the reloaded certificate: each keeps its own copy, refreshed
/// at its next accept.
#[test]
fn every_shard_takes_the_reloaded_certificate() {
    let s = setup("shards", "shards = 3\n");
    let addr = s.proxy.local_addr();
    let second = leaf(&s.ca, "ringway-second", 2);
    s.files.install(&second);
    s.proxy.reload_certificates().unwrap();
    // The kernel spreads connections over the three listeners: forty see them all.
    for _ in 0..40 {
        assert_eq!(cert_of_new_connection(addr, &s.ca), second.der);
    }
}

#[test]
fn a_client_that_never_finishes_its_handshake_is_closed_at_the_head_timeout() {
    let s = setup("silent", "header_timeout_ms = 400\n");
    let addr = s.proxy.local_addr();
    // Silent: connects, sends nothing.
    let mut silent = Client::connect(addr);
    // Half a ClientHello, then nothing.
    let mut half = Client::connect(addr);
    let hello = client_hello(&s.ca);
    half.send_raw(&hello[..hello.len() / 2]);
    // A whole ClientHello trickled a few bytes at a time: still bounded by the head's
    // timeout, counted from the accept.
    let trickle = std::thread::spawn(move || {
        let mut tcp = tcp_connect(addr);
        let started = Instant::now();
        for piece in hello.chunks(8) {
            if tcp.write_all(piece).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(30));
        }
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut rest = Vec::new();
        let _ = tcp.read_to_end(&mut rest);
        started.elapsed()
    });
    // Handshake done, then its request's TLS record trickled: no plaintext comes of a
    // record until its last byte, and the head's timeout still holds.
    let ca_config = client_config(&s.ca, &[b"http/1.1"]);
    let slow_record = std::thread::spawn(move || {
        let started = Instant::now();
        let mut stream = tls_connect(addr, ca_config).unwrap();
        stream
            .conn
            .writer()
            .write_all(b"GET /internal/health HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let mut record = Vec::new();
        while stream.conn.wants_write() {
            stream.conn.write_tls(&mut record).unwrap();
        }
        for byte in &record[..record.len() - 1] {
            if stream.sock.write_all(&[*byte]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(30));
        }
        stream
            .sock
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut rest = Vec::new();
        let _ = stream.sock.read_to_end(&mut rest);
        started.elapsed()
    });
    let started = Instant::now();
    assert!(silent.is_closed(Duration::from_secs(3)));
    assert!(half.is_closed(Duration::from_secs(3)));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let trickled = trickle.join().unwrap();
    assert!(trickled < Duration::from_secs(2), "{trickled:?}");
    let trickled = slow_record.join().unwrap();
    assert!(trickled < Duration::from_secs(2), "{trickled:?}");
    // The shard carried on serving others meanwhile, and still does.
    assert_eq!(tls_client(addr, &s.ca).get("/internal/health").status, 200);
}

/// Clients at once on one shard, each with its own answers: every one asks for its own
/// number of tokens and gets exactly that, request after request.
#[test]
fn concurrent_tls_clients_each_get_their_own_answers() {
    let s = setup("concurrent", "");
    let addr = s.proxy.local_addr();
    let config = client_config(&s.ca, &[b"http/1.1"]);
    let clients: Vec<_> = (0..8)
        .map(|i| {
            let config = config.clone();
            std::thread::spawn(move || {
                let mut client = Client::over(tls_connect(addr, config).unwrap());
                for n in 0..10 {
                    let tokens = 3 + i + 8 * (n % 2);
                    let extra = format!("X-Mock-Tokens: {tokens}\r\n");
                    let body = chat("llama3.2:latest", false);
                    let r = client.post_json("/v1/chat/completions", &body, &extra);
                    assert_eq!(r.status, 200);
                    assert_eq!(r.json()["usage"]["completion_tokens"], tokens, "client {i}");
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
}

/// A real ClientHello, as rustls would send it to ringway.
fn client_hello(ca: &Ca) -> Vec<u8> {
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut conn = ClientConnection::new(client_config(ca, &[b"http/1.1"]), name).unwrap();
    let mut hello = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut hello).unwrap();
    }
    hello
}

#[test]
fn plain_http_on_the_tls_listener_gets_a_400_and_a_close() {
    let s = setup("plain", "header_timeout_ms = 5000\n");
    let addr = s.proxy.local_addr();
    let mut plain = Client::connect(addr);
    let started = Instant::now();
    let r = plain.get("/v1/models");
    assert_eq!(r.status, 400);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(r.text().contains("HTTPS"), "{}", r.text());
    assert!(plain.is_closed(Duration::from_secs(2)));
    assert!(started.elapsed() < Duration::from_secs(2));
    // The shard keeps serving TLS clients.
    assert_eq!(tls_client(addr, &s.ca).get("/internal/health").status, 200);
}

#[test]
fn garbage_and_an_oversized_handshake_are_closed_promptly() {
    let s = setup("garbage", "header_timeout_ms = 5000\n");
    let addr = s.proxy.local_addr();
    // Bytes that are neither TLS nor HTTP: an alert (fatal, 2) and the close.
    let started = Instant::now();
    let mut noise = tcp_connect(addr);
    noise
        .write_all(&[0x05, 0x01, 0x00, 0xff, 0x13, 0x37, 0x00, 0x00, 0x42, 0x42])
        .unwrap();
    let answer = answer_then_close(&mut noise, Duration::from_secs(3)).expect("closed");
    assert_eq!(&answer[..1], &[0x15], "not an alert: {answer:?}");
    // A TLS record header, then junk.
    let mut junk = tcp_connect(addr);
    let mut record = vec![0x16, 0x03, 0x01, 0x00, 0x40];
    record.extend(std::iter::repeat_n(0xab, 64));
    junk.write_all(&record).unwrap();
    assert!(answer_then_close(&mut junk, Duration::from_secs(3)).is_some());
    // A ClientHello as large as a handshake message may be (64 KiB), then more records:
    // refused once that much came, long before the head timeout.
    let mut huge = tcp_connect(addr);
    let mut writer = huge.try_clone().unwrap();
    std::thread::spawn(move || {
        for i in 0..64 {
            let mut record = vec![0x16, 0x03, 0x01, 0x40, 0x00]; // 16 KiB fragments
            let mut body = vec![0x61; 16 * 1024];
            if i == 0 {
                body[..4].copy_from_slice(&[0x01, 0x00, 0xff, 0xff]);
            }
            record.extend_from_slice(&body);
            if writer.write_all(&record).is_err() {
                return;
            }
        }
    });
    assert!(answer_then_close(&mut huge, Duration::from_secs(4)).is_some());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(tls_client(addr, &s.ca).get("/internal/health").status, 200);
}

/// What ringway sent on `tcp` before it closed it, if it did within `within`.
fn answer_then_close(tcp: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    tcp.set_read_timeout(Some(within)).unwrap();
    let mut answer = Vec::new();
    let mut buf = [0; 4096];
    loop {
        match tcp.read(&mut buf) {
            Ok(0) => return Some(answer),
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Some(answer),
            Err(_) => return None,
        }
    }
}

/// A connection ringway closes (the client asked for it here) ends with close_notify:
/// the client's next read is a clean end of stream, not a truncation.
#[test]
fn ringway_sends_close_notify_when_it_closes() {
    let s = setup("close", "");
    let mut client = tls_client(s.proxy.local_addr(), &s.ca);
    let r =
        client.request(b"GET /internal/health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 200);
    let mut rest = Vec::new();
    let end = client.stream().read_to_end(&mut rest);
    assert!(matches!(end, Ok(0)), "{end:?} {rest:?}");
}

/// Beyond `server.max_connections` a TLS client is closed unanswered (a plain 503 would
/// be garbage to it); the connections within the limit are served.
#[test]
fn beyond_max_connections_a_tls_client_is_closed() {
    let s = setup("max", "max_connections = 1\n");
    let addr = s.proxy.local_addr();
    // The settling polls' last connection may still be closing.
    let mut held = None;
    assert!(eventually(Duration::from_secs(2), || {
        held = tls_connect(addr, client_config(&s.ca, &[b"http/1.1"])).ok();
        held.is_some()
    }));
    let mut held = Client::over(held.unwrap());
    assert_eq!(held.get("/internal/health").status, 200);
    let refused = tls_connect(addr, client_config(&s.ca, &[b"http/1.1"]));
    assert!(refused.is_err(), "a second connection got a session");
    assert_eq!(held.get("/internal/health").status, 200);
}

/// The binary: `--check-config` names the listener's files; SIGHUP (a configuration
/// reload) reads the certificate again and does not stop ringway, a broken key fails it
/// and the certificate in force stays; SIGTERM still stops it.
#[test]
fn the_binary_reloads_its_certificate_on_sighup() {
    let a = mock("a");
    let ca = ca();
    let first = leaf(&ca, "ringway-first", 1);
    let files = Files::new("sighup");
    let server = files.install(&first);
    let config = TempFile::new(&config_text(&[Ep::new("a", &a)], &server, ""));
    let bin = env!("CARGO_BIN_EXE_ringway");
    let check = Command::new(bin)
        .args(["--config", config.0.to_str().unwrap(), "--check-config"])
        .output()
        .unwrap();
    assert!(check.status.success());
    let shown = String::from_utf8_lossy(&check.stdout);
    assert!(
        shown.contains("TLS listener") && shown.contains("cert.pem"),
        "{shown}"
    );

    let mut child = Command::new(bin)
        .args(["--config", config.0.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = std::io::BufReader::new(child.stderr.take().unwrap());
    let addr = listening_address(&mut log);
    std::thread::spawn(move || std::io::copy(&mut log, &mut std::io::sink()));
    let pid = child.id().to_string();
    let kill = |signal: &str| {
        let sent = Command::new("kill").args([signal, &pid]).status().unwrap();
        assert!(sent.success());
    };
    let mut open = tls_client(addr, &ca);
    assert_eq!(open.get("/internal/health").status, 200);

    let second = leaf(&ca, "ringway-second", 2);
    files.install(&second);
    kill("-HUP");
    assert!(eventually(Duration::from_secs(5), || {
        cert_of_new_connection(addr, &ca) == second.der
    }));
    // A second SIGHUP with a broken file: ringway keeps its certificate and runs on.
    files.replace("key.pem", "nothing here\n");
    kill("-HUP");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(cert_of_new_connection(addr, &ca), second.der);
    assert_eq!(open.get("/internal/health").status, 200);
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGHUP stopped ringway"
    );

    kill("-TERM");
    let mut exit = None;
    assert!(eventually(Duration::from_secs(5), || {
        exit = child.try_wait().unwrap();
        exit.is_some()
    }));
    assert_eq!(exit.unwrap().code(), Some(0));
}

/// The address of ringway's "listening on" line, which says it speaks TLS.
fn listening_address(log: &mut impl std::io::BufRead) -> SocketAddr {
    let mut seen = Vec::new();
    for _ in 0..50 {
        let mut line = String::new();
        if log.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if let Some(rest) = line.split(" listening on ").nth(1) {
            assert!(rest.contains("(TLS)"), "{line}");
            return rest.split_whitespace().next().unwrap().parse().unwrap();
        }
        seen.push(line);
    }
    panic!("no listening line in {seen:?}");
}
