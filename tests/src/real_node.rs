//! The real node `real-1` (kubelet + containerd + runc, tests/cluster/real-node.sh) for the
//! tests that run real containers: its settings from `.cluster/env`, the loud skip when the
//! cluster runs without it, and images built here from the shipped Dockerfiles and imported
//! into its containerd.

use std::{path::PathBuf, time::Instant};

use crate::run_ok;

/// The real node's name.
pub const NAME: &str = "real-1";
/// The key of its `NoSchedule` taint (value `true`): only pods that tolerate it land there.
pub const TAINT: &str = "invoiceops.dev/real-node";
/// The repository root.
pub const REPOSITORY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// Where pods on the real node reach the API server and Prometheus, and where kubelet writes
/// their logs (from `.cluster/env`).
#[derive(Clone, Debug)]
pub struct RealNode {
    /// The API server's address for pods (a forwarder on the bridge's address).
    pub api_host: String,
    /// Its port.
    pub api_port: String,
    /// Prometheus for pods.
    pub prometheus_url: String,
    /// kubelet's pod log folder.
    pub pod_logs: PathBuf,
}

/// Writes `line` to the process' stderr directly, past the test harness' output capture, so
/// that skip banners and timings show in `make test` even when the test passes.
pub fn say(test: &str, line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{test}: {line}");
}

/// The real node's settings, or `None` after a loud banner saying that `what` did not run,
/// when the cluster runs without it (`CLUSTER_REAL_NODE=0`).
pub fn real_node(test: &str, what: &str) -> Option<RealNode> {
    if std::env::var("CLUSTER_REAL_NODE").as_deref() != Ok("1") {
        let banner = "!".repeat(78);
        say(
            test,
            &format!(
                "\n{banner}\n!! SKIPPED: {what} did NOT run: this cluster has no real node\n!! \
                 (CLUSTER_REAL_NODE={}). Start the cluster with CLUSTER_REAL_NODE=1.\n{banner}\n",
                std::env::var("CLUSTER_REAL_NODE").unwrap_or_else(|_| "unset".to_owned())
            ),
        );
        return None;
    }
    let env = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!(
                "{name} is not set although CLUSTER_REAL_NODE=1: the cluster was started by an \
                 older harness; `make cluster-down && make cluster-up`"
            )
        })
    };
    Some(RealNode {
        api_host: env("CLUSTER_REAL_NODE_API_HOST"),
        api_port: env("CLUSTER_REAL_NODE_API_PORT"),
        prometheus_url: env("CLUSTER_REAL_NODE_PROMETHEUS_URL"),
        pod_logs: PathBuf::from(env("CLUSTER_REAL_NODE_POD_LOGS")),
    })
}

/// Runs a command that must succeed; its stdout.
pub fn ok(program: &str, args: &[&str]) -> String {
    run_ok(program, args, None)
}

/// The image of `binary` (a workspace binary this run built) from the Dockerfile at
/// `dockerfile` (relative to the repository): built with tests/image/build.sh unless its
/// archive is there already, run once standalone with runc as non-root on a read-only root
/// (tests/image/check.sh with `check`: the text its output must contain, then the
/// arguments), and
/// imported into the real node's containerd. Its reference, `repository:e2e-<hash>`: the tag
/// changes with the binary and the recipe, so a pod never runs a stale image of the same name.
pub fn local_image(
    test: &str,
    dockerfile: &str,
    binary: &std::path::Path,
    repository: &str,
    check: &[&str],
) -> String {
    let metadata = std::fs::metadata(binary).expect("the binary to put in the image");
    let tag = {
        use std::hash::{Hash as _, Hasher as _};
        let mut hasher = std::hash::DefaultHasher::new();
        for recipe in [dockerfile, "tests/image/build.sh"] {
            std::fs::read(format!("{REPOSITORY}/{recipe}"))
                .expect("read the image recipe")
                .hash(&mut hasher);
        }
        metadata.len().hash(&mut hasher);
        metadata
            .modified()
            .ok()
            .and_then(|time| time.duration_since(std::time::UNIX_EPOCH).ok())
            .hash(&mut hasher);
        format!("e2e-{:012x}", hasher.finish() & 0xffff_ffff_ffff)
    };
    let image = format!("{repository}:{tag}");
    let stem = binary
        .file_name()
        .expect("binary name")
        .to_string_lossy()
        .into_owned();
    let archive = binary
        .parent()
        .expect("binary folder")
        .join("images")
        .join(format!("{stem}-{tag}.tar"));
    let archive_path = archive.to_str().expect("utf-8 path");
    let started = Instant::now();
    if !archive.exists() {
        // Archives of earlier binaries are never used again.
        let folder = archive.parent().expect("images folder");
        for entry in std::fs::read_dir(folder).into_iter().flatten().flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(&format!("{stem}-e2e-"))
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        ok(
            &format!("{REPOSITORY}/tests/image/build.sh"),
            &[
                &format!("{REPOSITORY}/{dockerfile}"),
                binary.to_str().expect("utf-8 path"),
                &image,
                archive_path,
            ],
        );
    }
    let built = started.elapsed();
    let mut arguments = vec![archive_path];
    arguments.extend_from_slice(check);
    ok(&format!("{REPOSITORY}/tests/image/check.sh"), &arguments);
    let checked = started.elapsed();
    ok(
        &format!("{REPOSITORY}/tests/cluster/cluster.sh"),
        &["import-image", archive_path],
    );
    say(
        test,
        &format!(
            "image {image}: built in {:.1?}, run standalone in {:.1?}, imported in {:.1?}",
            built,
            checked - built,
            started.elapsed() - checked
        ),
    );
    image
}
