//! TLS settings of HTTP destinations: PEM parsing with errors that name the problem, client
//! identities (mTLS) whose key is checked against their certificate, extra trusted CAs, and
//! the classification of TLS failures (the receiver refused our certificate; we do not trust
//! the receiver's).
//!
//! What it is not: a TLS stack. reqwest (rustls with the platform verifier) does the
//! handshakes; this module prepares what it is given and reads what it reports.

use rustls::AlertDescription;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Parses one or more PEM certificates, naming the problem.
pub fn parse_certificates(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("is not valid PEM: {e}"))?;
    if certs.is_empty() {
        return Err("contains no PEM certificate (-----BEGIN CERTIFICATE-----)".into());
    }
    for c in &certs {
        webpki_parse(c)?;
    }
    Ok(certs)
}

/// Checks that a DER certificate parses as X.509 (rustls's own end-entity parser).
fn webpki_parse(c: &CertificateDer<'_>) -> Result<(), String> {
    // Building a one-certificate root store parses the certificate's structure.
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(c.clone())
        .map_err(|e| format!("holds a certificate that does not parse: {e}"))
}

/// Parses a PEM private key (PKCS#8, PKCS#1 or SEC1), naming the problem.
pub fn parse_private_key(pem: &str) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            "contains no PEM private key (-----BEGIN PRIVATE KEY-----)".to_string()
        }
        other => format!("is not a valid PEM private key: {other}"),
    })
}

/// Which of the two halves of a client identity is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityError {
    /// The certificate chain.
    Certificate(String),
    /// The private key (or it does not belong to the certificate).
    Key(String),
}

/// Checks a client certificate chain and its key: both parse and the key is the
/// certificate's. Returns the PEM reqwest takes (`cert` then `key`).
pub fn client_identity(cert_pem: &str, key_pem: &str) -> Result<reqwest::Identity, IdentityError> {
    let certs = parse_certificates(cert_pem).map_err(IdentityError::Certificate)?;
    let key = parse_private_key(key_pem).map_err(IdentityError::Key)?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| IdentityError::Key(format!("cannot be used for TLS: {e}")))?;
    let certified = rustls::sign::CertifiedKey::new(certs, signing);
    match certified.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(IdentityError::Key(
                "does not belong to client_cert (the public keys differ)".into(),
            ));
        }
        // The key type cannot tell its public key: nothing to compare.
        Err(_) => {}
    }
    let bundle = format!("{}\n{}\n", cert_pem.trim(), key_pem.trim());
    reqwest::Identity::from_pem(bundle.as_bytes())
        .map_err(|e| IdentityError::Key(format!("cannot be used for TLS: {e}")))
}

/// Trusted CA certificates for reqwest, from PEM.
pub fn ca_certificates(pem: &str) -> Result<Vec<reqwest::Certificate>, String> {
    parse_certificates(pem)?
        .iter()
        .map(|c| {
            reqwest::Certificate::from_der(c.as_ref())
                .map_err(|e| format!("holds a certificate that cannot be trusted: {e}"))
        })
        .collect()
}

/// A TLS failure worth telling apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsFailure {
    /// The receiver's certificate is not trusted (or not valid for its name).
    Untrusted(String),
    /// The receiver refused the handshake because of our certificate (or its absence).
    Refused(String),
}

/// Finds a TLS failure in an error's chain. `io::Error`'s `source()` skips the error it wraps,
/// so wrapped errors are looked into too.
pub fn failure_in(e: &(dyn std::error::Error + 'static)) -> Option<TlsFailure> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(f) = rustls_failure(err) {
            return Some(f);
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(f) = failure_in(inner)
        {
            return Some(f);
        }
        cur = err.source();
    }
    None
}

fn rustls_failure(err: &(dyn std::error::Error + 'static)) -> Option<TlsFailure> {
    let r = err.downcast_ref::<rustls::Error>()?;
    match r {
        rustls::Error::InvalidCertificate(why) => Some(TlsFailure::Untrusted(format!("{why:?}"))),
        rustls::Error::AlertReceived(
            a @ (AlertDescription::BadCertificate
            | AlertDescription::CertificateRequired
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateExpired
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::AccessDenied),
        ) => Some(TlsFailure::Refused(format!("{a:?}"))),
        _ => None,
    }
}

/// Whether a response is nginx's answer to a client certificate it refused or missed
/// (`400` with "The SSL certificate error" or "No required SSL certificate was sent").
pub fn is_refused_certificate_page(status: u16, body: &str) -> bool {
    status == 400 && body.contains("SSL certificate")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["client.test".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn identities_are_checked() {
        let (cert, key) = pair();
        let (_, other_key) = pair();
        assert!(client_identity(&cert, &key).is_ok());
        assert!(matches!(
            client_identity(&cert, &other_key),
            Err(IdentityError::Key(m)) if m.contains("does not belong")
        ));
        assert!(matches!(
            client_identity("not pem", &key),
            Err(IdentityError::Certificate(m)) if m.contains("no PEM certificate")
        ));
        assert!(matches!(
            client_identity(&cert, &cert),
            Err(IdentityError::Key(m)) if m.contains("no PEM private key")
        ));
        let broken = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(parse_certificates(broken).is_err());
        assert_eq!(ca_certificates(&cert).unwrap().len(), 1);
    }
}

/// TLS for a client that connects by address (the address the target policy checked) but
/// must verify the server's certificate for the host name that was configured: the system's
/// roots (the platform verifier) and the aws-lc-rs provider, with every certificate checked
/// against `host` whatever name the client library asks about.
///
/// For clients that take a `rustls::ClientConfig` but resolve the host name themselves
/// (async-nats): given the checked IP address instead of the name, they connect there, and
/// this keeps the certificate check on the name. No SNI is sent (rustls sends none for an IP
/// address).
#[cfg(feature = "nats")]
pub fn verifying_for(host: &str) -> Result<rustls::ClientConfig, String> {
    use std::sync::Arc;
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| format!("{host:?} is not a host name a certificate can name: {e}"))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let inner = rustls_platform_verifier::Verifier::new(provider.clone())
        .map_err(|e| format!("cannot load the system's trusted certificates: {e}"))?;
    let verifier = ForName {
        name,
        inner: Arc::new(inner),
    };
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

/// A verifier that checks certificates for one fixed name (see [`verifying_for`]); the
/// checks themselves are the inner verifier's, unchanged.
#[cfg(feature = "nats")]
#[derive(Debug)]
struct ForName {
    name: rustls::pki_types::ServerName<'static>,
    inner: std::sync::Arc<dyn rustls::client::danger::ServerCertVerifier>,
}

#[cfg(feature = "nats")]
impl rustls::client::danger::ServerCertVerifier for ForName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _asked_for: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
