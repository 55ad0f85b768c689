//! Object storage for closed archive segments: S3 or any S3-compatible
//! server (`MinIO`, Ceph RGW, `SeaweedFS`, …), through the `object_store`
//! crate (`SigV4` signing with `ring`, HTTPS with `rustls` and the `ring`
//! provider, the system's CAs or `ca_file`).
//!
//! The archive's threads are not async: a [`Remote`] owns a one-worker
//! tokio runtime and its methods block the calling thread until the
//! request is done (they are never called from async code).

use std::{path::PathBuf, sync::Arc, time::Duration};

use futures_util::TryStreamExt as _;
use object_store::{
    aws::{AmazonS3, AmazonS3Builder},
    path::Path as ObjPath,
    Certificate, ClientOptions, ObjectStore as _, ObjectStoreExt as _, PutPayload,
};
use zeroize::Zeroizing;

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("object storage: {0}")]
    Store(#[from] object_store::Error),
    #[error("object storage: {what} {path}")]
    File {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("object storage: cannot start its runtime")]
    Runtime(#[source] std::io::Error),
    #[error("object storage: {key}: {size} bytes stored, {expected} sent")]
    SizeMismatch {
        key: String,
        size: u64,
        expected: u64,
    },
    #[error("object storage: {key}: {size} bytes, more than the {limit} a segment may have")]
    TooLarge { key: String, size: u64, limit: u64 },
    #[error("object storage: request task ended")]
    Ended,
}

/// `[store.archive.s3]`, validated.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Config {
    pub bucket: String,
    /// Key prefix, `""` or ending in `/`.
    pub prefix: String,
    pub region: String,
    /// `https://HOST[:PORT]` of an S3-compatible server; AWS when `None`.
    pub endpoint: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<Zeroizing<String>>,
    pub session_token: Option<Zeroizing<String>>,
    /// Path-style URLs (`endpoint/bucket/key`), as most S3-compatible
    /// servers want; virtual-hosted style otherwise.
    pub path_style: bool,
    pub allow_http: bool,
    /// PEM CA(s) the endpoint's certificate must chain to, instead of the
    /// system's.
    pub ca_file: Option<PathBuf>,
    /// Server-side encryption with this KMS key (AWS).
    pub sse_kms_key_id: Option<String>,
    pub delete_local_after_upload: bool,
    pub timeout: Duration,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("delete_local_after_upload", &self.delete_local_after_upload)
            .finish_non_exhaustive()
    }
}

/// Largest object read back (a segment is far smaller).
pub const MAX_OBJECT: u64 = 4 << 30;

pub struct Remote {
    s3: Arc<AmazonS3>,
    rt: tokio::runtime::Runtime,
    prefix: String,
    /// `s3://bucket/prefix`, for messages.
    pub url: String,
}

impl Remote {
    pub fn new(cfg: &S3Config) -> Result<Self, RemoteError> {
        // reqwest is built without a bundled crypto provider: rustls uses
        // the process default, which must be `ring` like the rest of
        // aitrail. Installing fails only when one is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut opts = ClientOptions::new()
            .with_allow_http(cfg.allow_http)
            .with_timeout(cfg.timeout)
            .with_connect_timeout(Duration::from_secs(10));
        if let Some(ca) = &cfg.ca_file {
            let pem = std::fs::read(ca).map_err(|source| RemoteError::File {
                what: "cannot read ca_file",
                path: ca.clone(),
                source,
            })?;
            opts = opts.with_no_system_certificates(true);
            for c in Certificate::from_pem_bundle(&pem)? {
                opts = opts.with_root_certificate(c);
            }
        }
        // The environment's credentials (AWS_* variables, web identity,
        // instance metadata) unless the config names its own.
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(&cfg.bucket)
            .with_region(&cfg.region)
            .with_allow_http(cfg.allow_http)
            .with_virtual_hosted_style_request(!cfg.path_style)
            .with_client_options(opts);
        if let Some(e) = &cfg.endpoint {
            b = b.with_endpoint(e);
        }
        if let Some(id) = &cfg.access_key_id {
            b = b.with_access_key_id(id);
        }
        if let Some(s) = &cfg.secret_access_key {
            b = b.with_secret_access_key(s.as_str());
        }
        if let Some(t) = &cfg.session_token {
            b = b.with_token(t.as_str());
        }
        if let Some(k) = &cfg.sse_kms_key_id {
            b = b.with_sse_kms_encryption(k);
        }
        let s3 = b.build()?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("archive-s3")
            .enable_all()
            .build()
            .map_err(RemoteError::Runtime)?;
        Ok(Self {
            s3: Arc::new(s3),
            rt,
            prefix: cfg.prefix.clone(),
            url: format!("s3://{}/{}", cfg.bucket, cfg.prefix),
        })
    }

    /// The object key of a segment.
    pub fn key(&self, day: &str, name: &str) -> String {
        format!("{}{day}/{name}", self.prefix)
    }

    /// Runs `fut` on the remote's runtime and waits for it.
    fn run<T: Send + 'static>(
        &self,
        fut: impl std::future::Future<Output = Result<T, RemoteError>> + Send + 'static,
    ) -> Result<T, RemoteError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.rt.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv().map_err(|_| RemoteError::Ended)?
    }

    /// Stores `bytes` at `key` (replacing what was there) and checks the
    /// stored size.
    pub fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), RemoteError> {
        let s3 = Arc::clone(&self.s3);
        let path = ObjPath::from(key);
        let expected = bytes.len() as u64;
        let key = key.to_owned();
        self.run(async move {
            s3.put(&path, PutPayload::from(bytes)).await?;
            let size = s3.head(&path).await?.size;
            if size == expected {
                Ok(())
            } else {
                Err(RemoteError::SizeMismatch {
                    key,
                    size,
                    expected,
                })
            }
        })
    }

    pub fn get(&self, key: &str) -> Result<Vec<u8>, RemoteError> {
        let s3 = Arc::clone(&self.s3);
        let path = ObjPath::from(key);
        let key = key.to_owned();
        self.run(async move {
            let got = s3.get(&path).await?;
            if got.meta.size > MAX_OBJECT {
                return Err(RemoteError::TooLarge {
                    key,
                    size: got.meta.size,
                    limit: MAX_OBJECT,
                });
            }
            Ok(got.bytes().await?.to_vec())
        })
    }

    /// Deletes `key`; one that is already gone is not an error.
    pub fn delete(&self, key: &str) -> Result<(), RemoteError> {
        let s3 = Arc::clone(&self.s3);
        let path = ObjPath::from(key);
        self.run(async move {
            match s3.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(e.into()),
            }
        })
    }

    /// Keys (and sizes) under `prefix` (relative to the configured one).
    pub fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, RemoteError> {
        let s3 = Arc::clone(&self.s3);
        let full = format!("{}{prefix}", self.prefix);
        self.run(async move {
            let path = ObjPath::from(full.as_str());
            let found: Vec<_> = s3.list(Some(&path)).try_collect().await?;
            Ok(found
                .into_iter()
                .map(|m| (m.location.to_string(), m.size))
                .collect())
        })
    }
}
