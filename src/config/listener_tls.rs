//! The TLS listener's certificate and key (`server.tls_cert_file`, `server.tls_key_file`),
//! read and checked at load, so `--check-config` finds a missing or unreadable file, a
//! file without a certificate or key, and a key that does not go with the certificate,
//! before anything starts. A certificate reload (`tls/listener.rs`) reads the same two
//! files again through [`ListenerTls::reread`], with the same checks and messages.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::NoServerSessionStorage;

use super::{ConfigError, Origin};

const CERT_KEY: &str = "server.tls_cert_file";
const KEY_KEY: &str = "server.tls_key_file";

/// The TLS listener's settings: where its certificate and key are, and the rustls server
/// configuration made from them.
#[derive(Clone)]
pub struct ListenerTls {
    /// `server.tls_cert_file`: the PEM certificate chain, the server's own first.
    pub cert_file: PathBuf,
    /// `server.tls_key_file`: its PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    pub(crate) server: Arc<rustls::ServerConfig>,
}

impl fmt::Debug for ListenerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenerTls")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

/// `server.tls_cert_file` and `server.tls_key_file`: both, or neither (plain HTTP).
pub(super) fn listener_tls(
    cert: Option<&str>,
    key: Option<&str>,
    at: Origin<'_>,
) -> Result<Option<ListenerTls>, ConfigError> {
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => load(Path::new(cert), Path::new(key), at).map(Some),
        (Some(_), None) => Err(at.err(KEY_KEY, format!("{CERT_KEY} needs its {KEY_KEY}"))),
        (None, Some(_)) => Err(at.err(CERT_KEY, format!("{KEY_KEY} needs its {CERT_KEY}"))),
    }
}

impl ListenerTls {
    /// Reads both files again (a renewed certificate); `origin` is the configuration
    /// they came from, for the errors.
    pub(crate) fn reread(&self, origin: &str) -> Result<ListenerTls, ConfigError> {
        load(&self.cert_file, &self.key_file, Origin(origin))
    }
}

fn load(cert: &Path, key: &Path, at: Origin<'_>) -> Result<ListenerTls, ConfigError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| at.err(CERT_KEY, format!("cannot read {cert:?}: {}", pem_error(&e))))?;
    if chain.is_empty() {
        return Err(at.err(CERT_KEY, format!("{cert:?} holds no PEM certificate")));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        at.err(
            KEY_KEY,
            format!(
                "cannot read a PEM private key from {key:?}: {}",
                pem_error(&e)
            ),
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| at.err(CERT_KEY, format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| {
            at.err(
                KEY_KEY,
                format!("{key:?} is not a usable key for the certificate in {cert:?}: {e}"),
            )
        })?;
    // HTTP/1.1 only. A client that offers ALPN without `http/1.1` (`h2` alone) is
    // refused with a no_application_protocol alert (RFC 7301 §3.2) rather than served a
    // protocol it did not ask for; one that offers no ALPN at all gets HTTP/1.1.
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    // No session resumption: rustls's resumption cache is one table behind a lock that
    // every shard's handshakes would share, and a ticket key would be one more secret to
    // rotate. A full handshake costs one signature; clients keep their connections.
    server.session_storage = Arc::new(NoServerSessionStorage {});
    server.send_tls13_tickets = 0;
    Ok(ListenerTls {
        cert_file: cert.to_path_buf(),
        key_file: key.to_path_buf(),
        server: Arc::new(server),
    })
}

/// A PEM error in words (the library's own shows the markers it missed as byte lists).
fn pem_error(e: &pem::Error) -> String {
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    match e {
        pem::Error::MissingSectionEnd { end_marker } => {
            let marker = text(end_marker);
            let line = match marker.starts_with('-') {
                true => marker,
                false => format!("-----END {marker}-----"),
            };
            format!("a PEM section does not end (no {line:?} line: a cut file?)")
        }
        pem::Error::IllegalSectionStart { line } => {
            format!("a malformed BEGIN line {:?}", text(line))
        }
        pem::Error::NoItemsFound => "no PEM section of that kind in it".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::parse_test as parse;

    fn temp(name: &str, text: &str) -> std::path::PathBuf {
        let path =
            std::env::temp_dir().join(format!("ringway-listener-{}-{name}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        path
    }

    fn pair(cert: &std::path::Path, key: &std::path::Path) -> String {
        format!(
            "[server]\ntls_cert_file = {:?}\ntls_key_file = {:?}",
            cert.to_str().unwrap(),
            key.to_str().unwrap()
        )
    }

    #[test]
    fn a_certificate_and_its_key_make_a_tls_listener() {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let cert_file = temp("good-cert.pem", &cert.pem());
        let key_file = temp("good-key.pem", &key.serialize_pem());
        let c = parse(&pair(&cert_file, &key_file)).unwrap();
        let tls = c.server.tls.as_ref().unwrap();
        assert_eq!(tls.cert_file, cert_file);
        assert_eq!(tls.server.alpn_protocols, vec![b"http/1.1".to_vec()]);
        // Shown in --check-config and logs: the paths, never the key.
        let shown = format!("{:?}", c.server);
        assert!(shown.contains("good-cert.pem") && !shown.contains("PRIVATE"));
        assert!(tls.reread("test.toml").is_ok());

        // A key that is not the certificate's.
        let other = rcgen::KeyPair::generate().unwrap();
        let other_file = temp("other-key.pem", &other.serialize_pem());
        let e = parse(&pair(&cert_file, &other_file)).unwrap_err();
        assert_eq!(e.key, "server.tls_key_file");
        assert!(e.message.contains("other-key.pem"), "{}", e.message);
        for f in [cert_file, key_file, other_file] {
            let _ = std::fs::remove_file(f);
        }
    }

    #[test]
    fn errors_name_the_key_and_the_file() {
        let e = parse("[server]\ntls_cert_file = \"/nonexistent/cert.pem\"").unwrap_err();
        assert_eq!(e.key, "server.tls_key_file");
        let e = parse("[server]\ntls_key_file = \"/nonexistent/key.pem\"").unwrap_err();
        assert_eq!(e.key, "server.tls_cert_file");
        let e = parse(
            "[server]\ntls_cert_file = \"/nonexistent/cert.pem\"\ntls_key_file = \"/nonexistent/key.pem\"",
        )
        .unwrap_err();
        assert_eq!(e.key, "server.tls_cert_file");
        assert!(
            e.message.contains("cannot read") && e.message.contains("/nonexistent/cert.pem"),
            "{}",
            e.message
        );
        let junk = temp("junk.pem", "not a certificate\n");
        let e = parse(&pair(&junk, &junk)).unwrap_err();
        assert_eq!(e.key, "server.tls_cert_file");
        assert!(
            e.message.contains("holds no PEM certificate"),
            "{}",
            e.message
        );
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let cert_file = temp("cert-only.pem", &cert.pem());
        let e = parse(&pair(&cert_file, &junk)).unwrap_err();
        assert_eq!(e.key, "server.tls_key_file");
        assert!(
            e.message.contains("junk.pem") && e.message.contains("private key"),
            "{}",
            e.message
        );
        assert!(e.to_string().contains("test.toml"), "{e}");
        let _ = std::fs::remove_file(junk);
        let _ = std::fs::remove_file(cert_file);
    }
}
