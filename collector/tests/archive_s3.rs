//! Archive segments in S3-compatible object storage, against a real
//! server: `moto` (`moto[server]` from `PyPI`, tests/clients/requirements.txt,
//! installed by tests/setup-test-deps.sh) started here on 127.0.0.1 over
//! HTTPS with a CA made for the test. What the uploader put is checked
//! with another client (boto3): keys, sizes, and the content decompressed
//! and compared event by event; then forget and retention on the objects.

mod common;

use std::{
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use aitrail_collector::store::{
    archive::{segment, Archiver, S3Config},
    keys::StoreKey,
    service::{ServiceConfig, StoreService},
    ForgetRequest, Store, StoreOptions,
};
use common::{archive_config, event, files_under, ids, markers, store_lines, T0};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

const BUCKET: &str = "aitrail-archive";

fn python() -> String {
    std::env::var("AITRAIL_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// A moto S3 server on 127.0.0.1, HTTPS with a certificate of a CA made
/// for the test; killed on drop.
struct Moto {
    child: Child,
    endpoint: String,
    ca: PathBuf,
    dir: PathBuf,
}

impl Moto {
    fn start(dir: &Path) -> Self {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "aitrail s3 test CA");
        let ca_key = KeyPair::generate().unwrap();
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&leaf_key, &ca, &ca_key)
            .unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let ca_file = write("s3-ca.pem", &ca.pem());
        let cert = write("s3.pem", &leaf.pem());
        let key = write("s3.key", &leaf_key.serialize_pem());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::fs::File::create(dir.join("moto.log")).unwrap();
        let child = Command::new(python())
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .arg("-c")
            .arg(&cert)
            .arg("-k")
            .arg(&key)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} -m moto.server: {e}", python()));
        let mut moto = Self {
            child,
            endpoint: format!("https://127.0.0.1:{port}"),
            ca: ca_file,
            dir: dir.to_owned(),
        };
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!(
                    "moto.server exited ({status}): is moto[server] installed? \
                     (tests/setup-test-deps.sh) {}",
                    std::fs::read_to_string(dir.join("moto.log")).unwrap_or_default()
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "moto did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        moto.client(&["mkbucket", BUCKET]);
        moto
    }

    /// Runs `tests/s3_client.py` (`boto3`) and returns its stdout.
    fn client(&self, args: &[&str]) -> String {
        let out = Command::new(python())
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/s3_client.py"))
            .arg(&self.endpoint)
            .arg(&self.ca)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "s3_client.py {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// (key, size) of the objects under `prefix`.
    fn list(&self, prefix: &str) -> Vec<(String, u64)> {
        self.dump(prefix)
            .into_iter()
            .map(|(k, s, _)| (k, s))
            .collect()
    }

    /// (key, size, content) of every object under `prefix`, sorted by key.
    fn dump(&self, prefix: &str) -> Vec<(String, u64, Vec<u8>)> {
        let out = self.dir.join("dump");
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir(&out).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&self.client(&["dump", BUCKET, prefix, out.to_str().unwrap()]))
                .unwrap();
        let mut objects: Vec<(String, u64, Vec<u8>)> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|o| {
                (
                    o["key"].as_str().unwrap().to_owned(),
                    o["size"].as_u64().unwrap(),
                    std::fs::read(o["file"].as_str().unwrap()).unwrap(),
                )
            })
            .collect();
        objects.sort();
        objects
    }

    /// Every line of every object under `prefix`, decompressed (and
    /// opened with `key` when sealed).
    fn lines(
        &self,
        prefix: &str,
        key: Option<&aitrail_collector::store::keys::Secret>,
    ) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        for (_, _, bytes) in self.dump(prefix) {
            segment::for_each_line(bytes.as_slice(), key, |l| {
                out.push(serde_json::from_slice(l).unwrap());
                Ok(())
            })
            .unwrap();
        }
        out
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn s3_config(moto: &Moto, prefix: &str, delete_local: bool) -> S3Config {
    S3Config {
        bucket: BUCKET.into(),
        prefix: prefix.into(),
        region: "us-east-1".into(),
        endpoint: Some(moto.endpoint.clone()),
        access_key_id: Some("testing".into()),
        secret_access_key: Some(zeroize::Zeroizing::new("testing".into())),
        session_token: None,
        path_style: true,
        allow_http: false,
        ca_file: Some(moto.ca.clone()),
        sse_kms_key_id: None,
        delete_local_after_upload: delete_local,
        timeout: Duration::from_secs(30),
    }
}

fn open(dir: &Path, s3: S3Config, key: Option<StoreKey>, max_age: Duration) -> Store {
    let mut a = archive_config(&dir.join("archive"), 8 * 1024);
    a.s3 = Some(s3);
    a.segment_max_age = max_age;
    Store::open_with(
        dir,
        StoreOptions {
            key,
            archive: Some(a),
        },
    )
    .unwrap()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
#[expect(clippy::too_many_lines, reason = "one scenario against one server")]
fn segments_go_to_s3_and_forget_and_retention_follow_them() {
    let tmp = tempfile::tempdir().unwrap();
    let moto = Moto::start(tmp.path());
    let dir = tmp.path().join("store");
    let prefix = "collector-1/";

    // Phase 1: local copies kept.
    let mut sent = Vec::new();
    {
        let store = open(
            &dir,
            s3_config(&moto, prefix, false),
            None,
            Duration::from_hours(1),
        );
        let mut a = Archiver::new(&store).unwrap();
        let batch: Vec<String> = (0..16)
            .map(|n| event(if n % 2 == 0 { "alice" } else { "bob" }, n, "llm.call"))
            .collect();
        store_lines(&store, T0, &batch);
        a.step().unwrap();
        a.close().unwrap();
        sent.extend((0..16).map(|n| {
            format!(
                "{}-{n:04}-llm.call",
                if n % 2 == 0 { "alice" } else { "bob" }
            )
        }));
        let archive = store.archive().unwrap();
        let n = archive.upload_pending(&store).unwrap();
        assert!(n >= 2, "{n} segments uploaded");
        assert_eq!(archive.upload_pending(&store).unwrap(), 0, "nothing twice");
        // Keys and sizes as the local files; content event by event.
        let local: Vec<(String, u64)> = files_under(&dir.join("archive/2026-11-27"))
            .iter()
            .map(|p| {
                (
                    format!(
                        "{prefix}2026-11-27/{}",
                        p.file_name().unwrap().to_string_lossy()
                    ),
                    std::fs::metadata(p).unwrap().len(),
                )
            })
            .collect();
        assert_eq!(moto.list(prefix), local);
        assert_eq!(ids(&moto.lines(prefix, None)), sorted(sent.clone()));
        assert_eq!(archive.counters.snapshot().uploads, n);
    }

    // Phase 2: reopened with delete_local_after_upload.
    let store = open(
        &dir,
        s3_config(&moto, prefix, true),
        None,
        Duration::from_hours(1),
    );
    let mut archiver = Archiver::new(&store).unwrap();
    let batch: Vec<String> = (16..24)
        .map(|n| event(if n % 2 == 0 { "alice" } else { "bob" }, n, "llm.call"))
        .collect();
    store_lines(&store, T0, &batch);
    sent.extend((16..24).map(|n| {
        format!(
            "{}-{n:04}-llm.call",
            if n % 2 == 0 { "alice" } else { "bob" }
        )
    }));
    archiver.step().unwrap();
    archiver.close().unwrap();
    let archive = store.archive().unwrap();
    let before = files_under(&dir.join("archive/2026-11-27")).len();
    let uploaded = archive.upload_pending(&store).unwrap();
    assert!(uploaded >= 1);
    assert_eq!(
        files_under(&dir.join("archive/2026-11-27")).len(),
        before - usize::try_from(uploaded).unwrap(),
        "uploaded segments have no local copy left"
    );
    assert_eq!(
        archive.counters.snapshot().local_deleted_after_upload,
        uploaded
    );
    assert_eq!(ids(&moto.lines(prefix, None)), sorted(sent.clone()));

    // Forget: objects with alice's lines are replaced (also those with no
    // local copy), her lines gone, every one of bob's kept.
    let t = store
        .forget(&ForgetRequest {
            user: "alice",
            by: "test",
            include_held: false,
            reason: None,
        })
        .unwrap();
    let r = t.tombstone.archive.unwrap();
    assert_eq!(r.lines_removed, 12);
    assert!(r.objects_rewritten >= 1, "{r:?}");
    assert_eq!(r.objects_pending, 0);
    let remote = moto.lines(prefix, None);
    assert!(remote.iter().all(|l| l["process"]["user"] == "bob"));
    let bob: Vec<String> = sent
        .iter()
        .filter(|i| i.starts_with("bob"))
        .cloned()
        .collect();
    assert_eq!(ids(&remote), sorted(bob));
    for (_, _, bytes) in moto.dump(prefix) {
        for n in (0..24).step_by(2) {
            let m = &markers("alice", n)[0];
            assert!(!bytes.windows(m.len()).any(|w| w == m.as_bytes()));
        }
    }
    // Retention of the archive deletes the objects too.
    assert!(archive.apply_retention(&store, "2026-11-28").unwrap() >= 2);
    assert_eq!(moto.list(prefix), Vec::<(String, u64)>::new());
}

#[test]
fn sealed_segments_are_uploaded_by_the_service() {
    let tmp = tempfile::tempdir().unwrap();
    let moto = Moto::start(tmp.path());
    let dir = tmp.path().join("store");
    let key_file = tmp.path().join("store.key");
    StoreKey::generate(&key_file).unwrap();
    let store = Arc::new(open(
        &dir,
        s3_config(&moto, "sealed/", true),
        Some(StoreKey::load(&key_file).unwrap()),
        Duration::from_millis(200),
    ));
    let service = StoreService::start(
        &store,
        ServiceConfig {
            retention: None,
            retention_interval: Duration::from_hours(1),
        },
    )
    .unwrap();
    let batch: Vec<String> = (0..10).map(|n| event("bob", n, "llm.call")).collect();
    store_lines(&store, T0, &batch);
    // The service closes the segment by age and uploads it.
    let start = Instant::now();
    while store
        .archive()
        .unwrap()
        .counters
        .snapshot()
        .local_deleted_after_upload
        == 0
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "nothing uploaded: {:?}",
            store.archive().unwrap().counters.snapshot()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    service.stop();
    let objects = moto.dump("sealed/");
    assert!(!objects.is_empty());
    // Opaque in the bucket, readable with the store's key.
    for (k, _, bytes) in &objects {
        assert!(k.ends_with(".ndjson.zst.enc"), "{k}");
        assert!(bytes.starts_with(b"ATRLSEG1"));
        for n in 0..10 {
            let m = &markers("bob", n)[0];
            assert!(!bytes.windows(m.len()).any(|w| w == m.as_bytes()));
        }
    }
    let key = StoreKey::load(&key_file).unwrap().archive_key();
    let want: Vec<String> = (0..10).map(|n| format!("bob-{n:04}-llm.call")).collect();
    assert_eq!(ids(&moto.lines("sealed/", Some(&key))), want);
}
