//! TLS with rustls: loading the certificate chain and key, swapping them on reload, and a
//! server handshake bounded by a deadline.

use std::fmt;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection};

use crate::config::TlsFiles;

/// Why a certificate chain and key could not be loaded. Each says which file, in words.
#[derive(Debug)]
pub enum TlsError {
    /// The certificate file could not be read or parsed.
    Certificate(PathBuf, pem::Error),
    /// The certificate file holds no certificate.
    NoCertificate(PathBuf),
    /// The key file could not be read or parsed, or holds no private key.
    Key(PathBuf, pem::Error),
    /// The key is not the private key of the leaf certificate.
    Mismatch {
        /// `--tls-cert`.
        cert: PathBuf,
        /// `--tls-key`.
        key: PathBuf,
    },
    /// rustls refused the pair for another reason (a key type it cannot sign with).
    Rejected(PathBuf, rustls::Error),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Certificate(path, e) => {
                write!(f, "certificate {}: {}", path.display(), pem_words(e))
            }
            TlsError::NoCertificate(path) => write!(
                f,
                "certificate {}: no '-----BEGIN CERTIFICATE-----' block",
                path.display()
            ),
            TlsError::Key(path, pem::Error::NoItemsFound) => write!(
                f,
                "private key {}: no private key block ('-----BEGIN PRIVATE KEY-----', \
                 'RSA PRIVATE KEY' or 'EC PRIVATE KEY')",
                path.display()
            ),
            TlsError::Key(path, e) => {
                write!(f, "private key {}: {}", path.display(), pem_words(e))
            }
            TlsError::Mismatch { cert, key } => write!(
                f,
                "the private key in {} does not belong to the certificate in {} (the first \
                 certificate of the file, the server's own, must be the key's)",
                key.display(),
                cert.display()
            ),
            TlsError::Rejected(key, e) => {
                write!(f, "private key {} cannot be used: {e}", key.display())
            }
        }
    }
}

impl std::error::Error for TlsError {}

/// A PEM parse error in words (the library's own shows octets as a list of numbers).
fn pem_words(e: &pem::Error) -> String {
    match e {
        pem::Error::MissingSectionEnd { end_marker } => format!(
            "the '{}' block has no END line (is the file cut off?)",
            String::from_utf8_lossy(end_marker)
        ),
        pem::Error::IllegalSectionStart { line } => {
            format!("a malformed BEGIN line: {}", crate::logsafe::escape(line))
        }
        pem::Error::Base64Decode(why) => format!("a block is not valid base64 ({why})"),
        pem::Error::Io(e) => e.to_string(),
        pem::Error::NoItemsFound => "nothing usable in it".to_owned(),
        other => other.to_string(),
    }
}

/// Builds a server configuration from PEM files: TLS 1.2 and 1.3 only, ring's algorithms, no
/// client certificates.
pub fn load(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let cert_err = |e| TlsError::Certificate(files.cert.clone(), e);
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .map_err(cert_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(cert_err)?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(files.cert.clone()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| TlsError::Key(files.key.clone(), e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Rejected(files.key.clone(), e))?
        .with_no_client_auth()
        // Checks that the key belongs to the leaf certificate.
        .with_single_cert(chain, key)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                TlsError::Mismatch {
                    cert: files.cert.clone(),
                    key: files.key.clone(),
                }
            }
            e => TlsError::Rejected(files.key.clone(), e),
        })?;
    Ok(Arc::new(config))
}

/// The certificate in force, shared by every session and replaced on reload.
pub struct Certificates {
    files: TlsFiles,
    current: RwLock<Arc<ServerConfig>>,
}

impl Certificates {
    /// Loads `files`; fails if they are unusable.
    pub fn open(files: TlsFiles) -> Result<Certificates, TlsError> {
        let config = load(&files)?;
        Ok(Certificates {
            files,
            current: RwLock::new(config),
        })
    }

    /// The configuration for a new handshake.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Reads the files again; a broken pair leaves the one in force untouched. Handshakes
    /// already under way finish with the configuration they started with.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = load(&self.files)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = config;
        Ok(())
    }

    /// The files, for log lines.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }
}

/// A socket whose timeouts can be set: the handshake shrinks them to its deadline.
pub trait Timed: Read + Write {
    /// Sets the read and write timeouts.
    fn set_timeouts(&self, timeout: Duration) -> io::Result<()>;
}

impl Timed for std::net::TcpStream {
    fn set_timeouts(&self, timeout: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(timeout))?;
        self.set_write_timeout(Some(timeout))
    }
}

/// Runs the server side of the handshake on `sock` within `timeout` in all: each read and
/// write may wait only for what is left, so a client that trickles bytes cannot stretch it.
/// The socket's timeouts are set back to `idle` afterwards. On a protocol error the alert is
/// sent before the error is returned.
pub fn handshake<S: Timed>(
    conn: &mut ServerConnection,
    sock: &mut S,
    timeout: Duration,
    idle: Duration,
) -> io::Result<()> {
    let deadline = Instant::now() + timeout;
    while conn.is_handshaking() {
        let left = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))?;
        sock.set_timeouts(left)?;
        while conn.wants_write() {
            conn.write_tls(sock)?;
        }
        if !conn.is_handshaking() {
            break;
        }
        if conn.read_tls(sock)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "client closed during the TLS handshake",
            ));
        }
        if let Err(e) = conn.process_new_packets() {
            // Tell the client why (the alert is queued), then give up.
            let _ = conn.write_tls(sock);
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
    }
    // TLS 1.3 session tickets and the last flight leave now, still within the deadline.
    while conn.wants_write() {
        conn.write_tls(sock)?;
    }
    sock.flush()?;
    sock.set_timeouts(idle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_empty_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let files = TlsFiles {
            cert: dir.path().join("cert.pem"),
            key: dir.path().join("key.pem"),
        };
        let e = load(&files).err().unwrap().to_string();
        assert!(e.contains("cert.pem"), "{e}");
        std::fs::write(&files.cert, "not a certificate\n").unwrap();
        let e = load(&files).err().unwrap();
        assert!(matches!(e, TlsError::NoCertificate(_)), "{e}");
        assert!(Certificates::open(files).is_err());
    }
}
