//! An `https://` endpoint's TLS settings (`tls_ca_file`, `tls_cert_file`, `tls_key_file`,
//! `tls_insecure_skip_verify`), read and checked at load, so `--check-config` finds a
//! missing or unreadable file and a bad certificate before anything starts; what the
//! connections use (`upstream/tls.rs`) is the finished rustls client configuration.

use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::super::{ConfigError, Origin, file};

/// How ringway makes and checks the TLS sessions of one `https://` endpoint.
#[derive(Debug, Clone)]
pub struct EndpointTls {
    pub(crate) client: Arc<ClientConfig>,
    /// SNI, and the name the certificate must carry: the URL's host.
    pub(crate) server_name: ServerName<'static>,
    /// The URL's host, for messages.
    pub(crate) host: String,
    /// `tls_insecure_skip_verify`: the certificate is not checked.
    pub insecure: bool,
}

/// The TLS keys of `endpoints[i]` (`e`) whose URL's host is `host`; `tls` says whether
/// the URL is `https://`. Keys set on a plain endpoint are refused (they would do nothing).
pub(super) fn endpoint_tls(
    e: &file::Endpoint,
    name: &str,
    host: &str,
    tls: bool,
    key: &dyn Fn(&str) -> String,
    at: Origin<'_>,
    warnings: &mut Vec<String>,
) -> Result<Option<EndpointTls>, ConfigError> {
    if !tls {
        let set = [
            ("tls_ca_file", e.tls_ca_file.is_some()),
            ("tls_cert_file", e.tls_cert_file.is_some()),
            ("tls_key_file", e.tls_key_file.is_some()),
            (
                "tls_insecure_skip_verify",
                e.tls_insecure_skip_verify.is_some(),
            ),
        ];
        if let Some((field, _)) = set.iter().find(|(_, set)| *set) {
            return Err(at.err(
                &key(field),
                format!("endpoint {name:?} is not https://: TLS settings do not apply to it"),
            ));
        }
        return Ok(None);
    }
    let insecure = e.tls_insecure_skip_verify.unwrap_or(false);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|err| at.err(&key("url"), format!("TLS: {err}")))?;
    let builder = if insecure {
        if e.tls_ca_file.is_some() {
            return Err(at.err(
                &key("tls_ca_file"),
                "has no effect with tls_insecure_skip_verify = true; remove one of them",
            ));
        }
        warnings.push(format!(
            "endpoint {name:?}: tls_insecure_skip_verify = true: its TLS certificate is NOT checked; anyone on the network path can impersonate it and read or change its traffic (prompts, answers, credentials). Use tls_ca_file instead."
        ));
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(
                provider.signature_verification_algorithms,
            )))
    } else {
        let roots = match &e.tls_ca_file {
            Some(path) => ca_file(path).map_err(|m| at.err(&key("tls_ca_file"), m))?,
            None => system_roots().map_err(|m| at.err(&key("url"), m))?,
        };
        builder.with_root_certificates(roots)
    };
    let mut client = match (&e.tls_cert_file, &e.tls_key_file) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), Some(pkey)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|err| {
                    at.err(
                        &key("tls_cert_file"),
                        format!("cannot read {cert:?}: {err}"),
                    )
                })?;
            if chain.is_empty() {
                return Err(at.err(
                    &key("tls_cert_file"),
                    format!("{cert:?} holds no PEM certificate"),
                ));
            }
            let private = PrivateKeyDer::from_pem_file(pkey).map_err(|err| {
                at.err(
                    &key("tls_key_file"),
                    format!("cannot read a PEM private key from {pkey:?}: {err}"),
                )
            })?;
            builder
                .with_client_auth_cert(chain, private)
                .map_err(|err| at.err(&key("tls_key_file"), format!("{pkey:?}: {err}")))?
        }
        (Some(_), None) => {
            return Err(at.err(&key("tls_key_file"), "tls_cert_file needs its tls_key_file"));
        }
        (None, Some(_)) => {
            return Err(at.err(
                &key("tls_cert_file"),
                "tls_key_file needs its tls_cert_file",
            ));
        }
    };
    // HTTP/1.1 only: a server that would pick h2 must not.
    client.alpn_protocols = vec![b"http/1.1".to_vec()];
    let server_name = ServerName::try_from(host.to_string()).map_err(|err| {
        at.err(
            &key("url"),
            format!("{host:?} is not a TLS server name: {err}"),
        )
    })?;
    Ok(Some(EndpointTls {
        client: Arc::new(client),
        server_name,
        host: host.to_string(),
        insecure,
    }))
}

/// The certificates of a PEM file (`tls_ca_file`), trusted instead of the system's.
fn ca_file(path: &str) -> Result<RootCertStore, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read {path:?}: {e}"))?;
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| format!("{path:?}: a certificate in it is not usable as a CA: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!("{path:?} holds no PEM certificate"));
    }
    Ok(roots)
}

/// The system's trusted roots, read once per process (only when an https endpoint has
/// no `tls_ca_file`).
fn system_roots() -> Result<RootCertStore, String> {
    static ROOTS: OnceLock<Result<RootCertStore, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (_added, _ignored) = roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                let why = found
                    .errors
                    .first()
                    .map_or(String::new(), |e| format!(" ({e})"));
                return Err(format!(
                    "https endpoint: no system root certificates found{why}; install the ca-certificates package or set tls_ca_file"
                ));
            }
            Ok(roots)
        })
        .clone()
}

/// `tls_insecure_skip_verify`: any certificate is accepted; the handshake's signatures
/// are still checked (the session keys stay bound to the certificate presented).
#[derive(Debug)]
struct NoVerification(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use crate::config::parse_test as parse;

    fn https(extra: &str) -> Result<crate::config::Config, crate::config::ConfigError> {
        parse(&format!(
            "[[endpoints]]\nname = \"gpu\"\nurl = \"https://127.0.0.1\"\n{extra}"
        ))
    }

    fn temp(name: &str, text: &str) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("ringway-tls-{}-{name}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn https_urls_default_to_port_443_and_insecure_warns() {
        let c = https("tls_insecure_skip_verify = true").unwrap();
        let e = &c.endpoints[0];
        assert_eq!(e.addrs[0].port(), 443);
        assert!(e.tls.as_ref().is_some_and(|t| t.insecure));
        assert!(
            c.warnings
                .iter()
                .any(|w| w.contains("gpu") && w.contains("NOT checked")),
            "{:?}",
            c.warnings
        );
        let c = parse("[[endpoints]]\nurl = \"http://127.0.0.1\"").unwrap();
        assert!(c.endpoints[0].tls.is_none());
    }

    /// Without `tls_ca_file`, the system's roots: found, or a clear error where the
    /// machine has none (a scratch container).
    #[test]
    fn system_roots_by_default() {
        match https("") {
            Ok(c) => assert!(c.endpoints[0].tls.as_ref().is_some_and(|t| !t.insecure)),
            Err(e) => {
                assert_eq!(e.key, "endpoints[0].url");
                assert!(e.message.contains("tls_ca_file"), "{}", e.message);
            }
        }
    }

    #[test]
    fn errors_name_the_key_and_the_file() {
        let e = https("tls_ca_file = \"/nonexistent/ca.pem\"").unwrap_err();
        assert_eq!(e.key, "endpoints[0].tls_ca_file");
        assert!(
            e.message.contains("cannot read") && e.message.contains("/nonexistent/ca.pem"),
            "{}",
            e.message
        );
        let empty = temp("empty.pem", "not a certificate\n");
        let e = https(&format!("tls_ca_file = {:?}", empty.to_str().unwrap())).unwrap_err();
        assert_eq!(e.key, "endpoints[0].tls_ca_file");
        assert!(
            e.message.contains("holds no PEM certificate"),
            "{}",
            e.message
        );
        let e = https(&format!(
            "tls_cert_file = {:?}\ntls_key_file = \"/nonexistent/key.pem\"",
            empty.to_str().unwrap()
        ))
        .unwrap_err();
        assert_eq!(e.key, "endpoints[0].tls_cert_file");
        let _ = std::fs::remove_file(empty);
        let e = https("tls_cert_file = \"/a.pem\"").unwrap_err();
        assert_eq!(e.key, "endpoints[0].tls_key_file");
        let e = https("tls_insecure_skip_verify = true\ntls_ca_file = \"/a.pem\"").unwrap_err();
        assert_eq!(e.key, "endpoints[0].tls_ca_file");
        let e = parse("[[endpoints]]\nurl = \"http://127.0.0.1:1\"\ntls_ca_file = \"/a.pem\"")
            .unwrap_err();
        assert_eq!(e.key, "endpoints[0].tls_ca_file");
        assert!(e.message.contains("not https://"), "{}", e.message);
    }
}
