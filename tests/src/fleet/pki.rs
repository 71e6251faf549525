//! Certificates for the TLS tests, made with the openssl command: apart
//! because neither servers nor members need them otherwise.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

/// A private CA, a server certificate for 127.0.0.1 and a client
/// certificate, made with the openssl command.
pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Pki {
    pub fn new(dir: &Path) -> Self {
        let dir = dir.join("pki");
        fs::create_dir_all(&dir).expect("pki dir");
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output()
                .expect("openssl (`cargo xtask setup` installs it)");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let key = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        run(&[
            &["req", "-x509"][..],
            &key,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=jailer test CA",
            ],
        ]
        .concat());
        for (who, ext) in [
            (
                "server",
                "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
            ),
            (
                "client",
                "subjectAltName=DNS:mx1\nextendedKeyUsage=clientAuth\n",
            ),
        ] {
            let extfile = format!("{who}.ext");
            fs::write(dir.join(&extfile), ext).expect("ext file");
            run(&[
                &["req"][..],
                &key,
                &[
                    "-keyout",
                    &format!("{who}.key"),
                    "-out",
                    &format!("{who}.csr"),
                    "-subj",
                    &format!("/CN={who}"),
                ],
            ]
            .concat());
            run(&[
                "x509",
                "-req",
                "-in",
                &format!("{who}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{who}.pem"),
                "-days",
                "2",
                "-extfile",
                &extfile,
            ]);
        }
        Self {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
        }
    }

    /// The `tls = {...}` line of a member that trusts the CA and shows its
    /// client certificate.
    pub fn member_tls(&self) -> String {
        format!(
            "tls = {{ ca_file = \"{}\", cert_file = \"{}\", key_file = \"{}\" }}",
            self.ca.display(),
            self.client_cert.display(),
            self.client_key.display()
        )
    }
}
