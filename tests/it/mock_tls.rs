//! The mock serving TLS itself (`ringway-mock --tls-cert --tls-key`, feature `tls`), as
//! the HTTPS benchmark row (`tools/bench/https.py`) runs it: ringway reaches it as an
//! `https://` endpoint, streamed and not, over one pooled connection.

use std::io::{Read, Write};

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

use crate::harness::*;

#[test]
fn ringway_streams_from_a_mock_serving_tls_on_one_pooled_connection() {
    // A CA and a certificate for 127.0.0.1 it signed, in PEM files as the binary reads.
    let ca_key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let (ca_file, cert_file) = (TempFile::new(&ca.pem()), TempFile::new(&cert.pem()));
    let key_file = TempFile::new(&key.serialize_pem());

    let mut config = MockConfig::named("tls");
    config.tls = Some(ringway_mock::tls::server_config(&cert_file.0, &key_file.0).unwrap());
    let mock = mock_with(config);
    let text = config_text(&[Ep::new("tls", &mock)], "", "");
    let plain = format!("url = \"http://{}\"\n", mock.addr());
    let https = format!(
        "url = \"https://{}\"\ntls_ca_file = {:?}\n",
        mock.addr(),
        ca_file.0.to_str().unwrap()
    );
    assert!(text.contains(&plain));
    let proxy = proxy_from(&text.replace(&plain, &https));
    // The health check and the model list read went over TLS too.
    assert!(mock.stats().tls_handshakes() >= 1);
    let handshakes = mock.stats().tls_handshakes();

    let mut client = Client::connect(proxy.local_addr());
    for _ in 0..3 {
        let r = client.post_json("/v1/chat/completions", &chat("llama3.2:latest", false), "");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("X-Mock-Backend"), Some("tls"));
        assert!(r.json()["choices"][0]["message"]["content"].is_string());
        let r = client.post_json(
            "/v1/chat/completions",
            &chat("llama3.2:latest", true),
            "X-Mock-Tokens: 5\r\nX-Mock-Token-Delay-Ms: 5\r\n",
        );
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.complete && r.arrivals.len() >= 5, "{:?}", r.arrivals);
        assert!(r.text().contains("data: [DONE]"), "{}", r.text());
    }
    assert_eq!(
        mock.stats().tls_handshakes() - handshakes,
        1,
        "one TLS connection, pooled"
    );
    // Not TLS: the handshake fails (a TLS alert at most comes back) and the connection
    // is closed; nothing is served.
    let mut plain = std::net::TcpStream::connect(mock.addr()).unwrap();
    plain.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    plain
        .write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(!answer.starts_with(b"HTTP/"), "{answer:?}");
}
