//! A throw-away PKI for TLS and mTLS tests: a self-signed CA, a server certificate for
//! `localhost`/`127.0.0.1` and a client certificate, all generated in-process with rcgen and
//! written as PEM files into a temp dir (the collector takes file paths).

use std::path::PathBuf;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use tempfile::TempDir;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use super::HarnessError;
use super::collector::ServerTls;

/// PEM files and strings of a generated CA, server and client certificate.
pub struct TestPki {
    dir: TempDir,
    /// The CA certificate (PEM): trust anchor for both sides.
    pub ca_pem: String,
    /// The client certificate (PEM), issued by the CA, for mTLS.
    pub client_cert_pem: String,
    /// The client private key (PEM).
    pub client_key_pem: String,
}

fn pki_err(e: impl std::fmt::Display) -> HarnessError {
    HarnessError::Start("test PKI".into(), e.to_string())
}

impl TestPki {
    /// Generates the CA and both leaf certificates.
    pub fn generate() -> Result<Self, HarnessError> {
        let ca_key = KeyPair::generate().map_err(pki_err)?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(pki_err)?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Fleetpulse test CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).map_err(pki_err)?;

        let server_key = KeyPair::generate().map_err(pki_err)?;
        let mut server_params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .map_err(pki_err)?;
        server_params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = server_params
            .signed_by(&server_key, &ca_cert, &ca_key)
            .map_err(pki_err)?;

        let client_key = KeyPair::generate().map_err(pki_err)?;
        let mut client_params =
            CertificateParams::new(vec!["agent.test.invalid".to_owned()]).map_err(pki_err)?;
        client_params
            .distinguished_name
            .push(DnType::CommonName, "fleetpulse test agent");
        client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_cert = client_params
            .signed_by(&client_key, &ca_cert, &ca_key)
            .map_err(pki_err)?;

        let dir = tempfile::Builder::new()
            .prefix("fleetpulse-pki-")
            .tempdir()
            .map_err(|e| HarnessError::io("create PKI temp dir", e))?;
        let write = |name: &str, pem: &str| {
            std::fs::write(dir.path().join(name), pem)
                .map_err(|e| HarnessError::io(format!("write {name}"), e))
        };
        let ca_pem = ca_cert.pem();
        write("ca.pem", &ca_pem)?;
        write("server.pem", &server_cert.pem())?;
        write("server-key.pem", &server_key.serialize_pem())?;
        let client_cert_pem = client_cert.pem();
        let client_key_pem = client_key.serialize_pem();
        write("client.pem", &client_cert_pem)?;
        write("client-key.pem", &client_key_pem)?;
        Ok(Self {
            dir,
            ca_pem,
            client_cert_pem,
            client_key_pem,
        })
    }

    /// Path of the CA certificate PEM file.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Server TLS files for the collector; with `mtls`, client certificates issued by the CA
    /// are required.
    pub fn server_tls(&self, mtls: bool) -> ServerTls {
        ServerTls {
            cert: self.dir.path().join("server.pem"),
            key: self.dir.path().join("server-key.pem"),
            client_ca: mtls.then(|| self.ca_path()),
        }
    }

    /// Client TLS trusting the test CA for `localhost`; `with_identity` adds the client
    /// certificate (mTLS).
    pub fn client_tls(&self, with_identity: bool) -> ClientTlsConfig {
        let config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .domain_name("localhost");
        if with_identity {
            config.identity(Identity::from_pem(
                &self.client_cert_pem,
                &self.client_key_pem,
            ))
        } else {
            config
        }
    }
}
