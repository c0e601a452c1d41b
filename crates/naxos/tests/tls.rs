//! TLS with roles, on real processes: three servers that require
//! certificates of the cluster's CA (made here with rcgen), an admin who
//! bootstraps and trims, a client who appends and reads but may not trim or
//! reconfigure, a plaintext client and a client of another CA, both refused.

mod common;

use common::{run_cli, Proc};
use rcgen::{CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use std::path::{Path, PathBuf};

/// A certificate and its key, written as PEM files.
struct Identity {
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
}

impl Identity {
    /// The TLS flags that present it.
    fn flags(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.cert.display().to_string(),
            "--tls-key".into(),
            self.key.display().to_string(),
            "--tls-ca".into(),
            self.ca.display().to_string(),
        ]
    }
}

/// A CA written to `dir/NAME-ca.pem`, and a way to issue certificates.
struct Ca<'a> {
    dir: &'a Path,
    name: &'static str,
    issuer: CertifiedIssuer<'static, KeyPair>,
    pem: PathBuf,
}

impl<'a> Ca<'a> {
    fn new(dir: &'a Path, name: &'static str) -> Ca<'a> {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, format!("{name} CA"));
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("a key")).expect("a CA");
        let pem = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&pem, issuer.pem()).expect("write the CA");
        Ca { dir, name, issuer, pem }
    }

    /// A certificate for 127.0.0.1 with subject OU `ou`.
    fn issue(&self, who: &str, ou: &str) -> Identity {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).expect("params");
        params.distinguished_name.push(DnType::CommonName, who);
        params.distinguished_name.push(DnType::OrganizationalUnitName, ou);
        let key = KeyPair::generate().expect("a key");
        let cert = params.signed_by(&key, &self.issuer).expect("a certificate");
        let (c, k) =
            (self.dir.join(format!("{}-{who}.pem", self.name)), self.dir.join(format!("{}-{who}.key", self.name)));
        std::fs::write(&c, cert.pem()).expect("write the certificate");
        std::fs::write(&k, key.serialize_pem()).expect("write the key");
        Identity { cert: c, key: k, ca: self.pem.clone() }
    }
}

/// Runs `naxos ARGS... --cluster ADDR <identity's flags>`.
fn as_(who: Option<&Identity>, addr: &str, args: &[&str]) -> (i32, String, String) {
    let mut v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    v.extend(["--cluster".to_string(), addr.to_string(), "--timeout".into(), "2s".into()]);
    if let Some(i) = who {
        v.extend(i.flags());
    }
    let refs: Vec<&str> = v.iter().map(String::as_str).collect();
    let (code, out, err) = run_cli(&refs, b"");
    (code, String::from_utf8_lossy(&out).trim().to_string(), err)
}

#[test]
fn tls_requires_certificates_of_the_ca_and_admin_rights_for_admin_requests() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = Ca::new(dir.path(), "cluster");
    let server_id = ca.issue("server", "admin");
    let admin = ca.issue("operator", "admin");
    let client = ca.issue("app", "client");
    let other = Ca::new(dir.path(), "other");
    let stranger = other.issue("stranger", "admin");

    let data: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("temp dir")).collect();
    let servers: Vec<Proc> = data
        .iter()
        .map(|d| {
            let mut args: Vec<String> =
                ["server", "--listen", "127.0.0.1:0", "--data-dir"].iter().map(|s| s.to_string()).collect();
            args.push(d.path().display().to_string());
            args.extend(server_id.flags());
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            Proc::start(&refs)
        })
        .collect();
    let addrs: Vec<String> = servers.iter().map(|p| p.addr.clone()).collect();
    let units = addrs.join(",");

    // A client's certificate cannot bootstrap; an admin's can.
    let (code, _, err) = as_(Some(&client), &addrs[0], &["bootstrap", "--log-units", &units]);
    assert_ne!(code, 0, "a client bootstrapped the cluster: {err}");
    assert!(err.contains("admin"), "{err}");
    let (code, _, err) = as_(Some(&admin), &addrs[0], &["bootstrap", "--log-units", &units]);
    assert_eq!(code, 0, "bootstrap: {err}");

    // The client appends and reads, through the RF=3 chain over TLS (the
    // servers talk to each other with their own certificates).
    for i in 0..20 {
        let (code, out, err) = as_(Some(&client), &addrs[1], &["append", &format!("entry {i}")]);
        assert_eq!((code, out.as_str()), (0, i.to_string().as_str()), "{err}");
    }
    let (code, out, err) = as_(Some(&client), &addrs[2], &["read", "7"]);
    assert_eq!((code, out.as_str()), (0, "entry 7"), "{err}");

    // Trim and reconfiguration need an admin's certificate.
    let (code, _, err) = as_(Some(&client), &addrs[0], &["trim", "5"]);
    assert_eq!(code, 13, "a client trimmed: {err}");
    assert!(err.contains("admin"), "{err}");
    let (code, _, err) = as_(Some(&client), &addrs[0], &["reconfigure", "remove", &addrs[2]]);
    assert_ne!(code, 0, "a client reconfigured the cluster: {err}");
    let (code, _, err) = as_(Some(&admin), &addrs[0], &["trim", "5"]);
    assert_eq!(code, 0, "the admin trims: {err}");
    let (code, _, err) = as_(Some(&client), &addrs[0], &["read", "3"]);
    assert_eq!(code, 4, "trimmed: {err}");

    // Plaintext is refused with a message that says why.
    let (code, _, err) = as_(None, &addrs[0], &["tail"]);
    assert_ne!(code, 0, "a plaintext client was served");
    assert!(err.contains("requires TLS"), "{err}");
    // So is a certificate of another CA (even one that says admin).
    let (code, _, err) = as_(Some(&stranger), &addrs[0], &["tail"]);
    assert_ne!(code, 0, "a client of another CA was served");
    assert!(err.contains("TLS"), "{err}");
    // And a TLS client of a plaintext server hears about TLS too.
    let plain_dir = tempfile::tempdir().expect("temp dir");
    let plain =
        Proc::start(&["dev", "--listen", "127.0.0.1:0", "--data-dir", plain_dir.path().to_str().expect("utf-8")]);
    let (code, _, err) = as_(Some(&client), &plain.addr, &["tail"]);
    assert_ne!(code, 0);
    assert!(err.contains("TLS"), "{err}");
}
