//! The operator's Prometheus client against a real Prometheus behind TLS and authentication:
//! Prometheus itself serving HTTPS and requiring a client certificate (its `--web.config.file`),
//! and, in front of a plain one, a loopback proxy of this test's own that lets a query through
//! only with the tenant header and the bearer token currently in a file (as Mimir, Cortex or an
//! authenticating proxy would). Certificates come from `openssl` at test time. No cluster is
//! needed; Prometheus is Debian's (`tool("prometheus")`).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command},
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
};
use invoice_operator::prometheus::{
    Connection, FleetQuery, Limits, MetricProfile, MetricsSource as _, Prometheus,
};
use invoice_operator_e2e::{free_port, random_suffix, stop, tool};
use prometheus_http_query::reqwest;

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        let path = std::env::temp_dir().join(format!("invoiceops-prom-auth-{}", random_suffix()));
        std::fs::create_dir_all(&path).expect("create the scratch directory");
        Self(path)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn openssl(directory: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(directory)
        .output()
        .expect("run openssl");
    assert!(
        output.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A CA, a serving certificate for 127.0.0.1 and a client certificate, all signed by the CA
/// (`ca.crt`, `server.{crt,key}`, `client.{crt,key}`), and a second, unrelated CA
/// (`other-ca.crt`).
fn certificates(scratch: &Scratch) {
    let dir = &scratch.0;
    let key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    for (name, subject) in [("ca", "invoiceops test CA"), ("other-ca", "someone else")] {
        let mut args = vec!["req", "-x509"];
        args.extend(key);
        let (key_file, cert_file, subject) = (
            format!("{name}.key"),
            format!("{name}.crt"),
            format!("/CN={subject}"),
        );
        args.extend([
            "-keyout",
            &key_file,
            "-out",
            &cert_file,
            "-days",
            "2",
            "-subj",
            &subject,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(dir, &args);
    }
    for (name, extensions) in [
        (
            "server",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        ),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ] {
        std::fs::write(scratch.join(&format!("{name}.ext")), extensions).expect("write");
        let (key_file, csr, cert_file, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
            format!("{name}.ext"),
        );
        let mut args = vec!["req"];
        args.extend(key);
        args.extend([
            "-keyout",
            &key_file,
            "-out",
            &csr,
            "-subj",
            "/CN=invoiceops",
        ]);
        openssl(dir, &args);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                &cert_file,
                "-extfile",
                &ext,
            ],
        );
    }
}

/// Debian's Prometheus on a loopback port with an empty configuration, optionally with a web
/// configuration (TLS); stopped on drop.
struct TestPrometheus {
    child: Child,
    address: String,
    scratch: PathBuf,
}

impl TestPrometheus {
    fn start(scratch: &Scratch, name: &str, web_config: Option<&str>) -> Self {
        let config = scratch.join(&format!("{name}.yml"));
        std::fs::write(&config, "global: {}\n").expect("write the Prometheus config");
        let address = format!("127.0.0.1:{}", free_port());
        let log = std::fs::File::create(scratch.join(&format!("{name}.log"))).expect("log");
        let mut command = Command::new(tool("prometheus"));
        command
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--web.listen-address={address}"))
            .arg(format!(
                "--storage.tsdb.path={}",
                scratch.join(&format!("{name}-data")).display()
            ))
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log);
        if let Some(web) = web_config {
            let path = scratch.join(&format!("{name}-web.yml"));
            std::fs::write(&path, web).expect("write the web config");
            command.arg(format!("--web.config.file={}", path.display()));
        }
        let child = command
            .spawn()
            .expect("start prometheus (Debian's prometheus package)");
        let prometheus = Self {
            child,
            address,
            scratch: scratch.0.clone(),
        };
        prometheus.wait_listening(name);
        prometheus
    }

    /// Waits until it accepts connections (TLS or not: the handshake is the client's).
    fn wait_listening(&self, name: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(&self.address).is_err() {
            assert!(
                Instant::now() < deadline,
                "prometheus did not listen within 60s: {}",
                std::fs::read_to_string(self.scratch.join(format!("{name}.log")))
                    .unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for TestPrometheus {
    fn drop(&mut self) {
        stop(&mut self.child, None);
    }
}

fn fleet_query() -> FleetQuery {
    FleetQuery::new(Duration::from_secs(60), Duration::from_secs(120))
}

/// Sends one fleet query round with `connection` and returns how many of its queries failed;
/// retried for a while until `expect_failures` holds (Prometheus may still be starting).
async fn failures(url: &str, connection: &Connection) -> u64 {
    let source = Prometheus::connect(url, connection, MetricProfile::default(), Limits::default())
        .unwrap_or_else(|error| panic!("connect: {error:?}"));
    source.fleet(&fleet_query()).await;
    source.query_failures()
}

/// Asks until a round passes without failures (Prometheus readies its query engine a moment
/// after it listens), at most 60 s.
async fn answers(url: &str, connection: &Connection) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if failures(url, connection).await == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "queries to {url} still fail after 60s with {connection:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn tls_with_a_client_certificate_reaches_a_prometheus_that_requires_one() {
    let scratch = Scratch::new();
    certificates(&scratch);
    let path = |name: &str| scratch.join(name).display().to_string();
    let web = format!(
        "tls_server_config:\n  cert_file: {}\n  key_file: {}\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {}\n",
        path("server.crt"),
        path("server.key"),
        path("ca.crt"),
    );
    let prometheus = TestPrometheus::start(&scratch, "tls", Some(&web));
    let url = format!("https://{}", prometheus.address);
    let full = Connection {
        ca_file: Some(scratch.join("ca.crt")),
        client_certificate: Some(scratch.join("client.crt")),
        client_key: Some(scratch.join("client.key")),
        ..Connection::default()
    };
    answers(&url, &full).await;

    // Each missing piece fails every query (an unknown measurement, never a crash).
    let queries = fleet_query().plan(&MetricProfile::default()).len() as u64;
    let without_certificate = Connection {
        client_certificate: None,
        client_key: None,
        ..full.clone()
    };
    assert_eq!(failures(&url, &without_certificate).await, queries);
    let untrusted = Connection {
        ca_file: Some(scratch.join("other-ca.crt")),
        ..full.clone()
    };
    assert_eq!(failures(&url, &untrusted).await, queries);
    let system_roots_only = Connection {
        ca_file: None,
        ..full.clone()
    };
    assert_eq!(failures(&url, &system_roots_only).await, queries);
    // And the full connection still answers.
    assert_eq!(failures(&url, &full).await, 0);
}

/// What the proxy lets through: the tenant header and the token now in the file.
struct Gate {
    upstream: String,
    token_file: PathBuf,
    http: reqwest::Client,
}

async fn gate(
    State(gate): State<Arc<Gate>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let token = std::fs::read_to_string(&gate.token_file).unwrap_or_default();
    let expected = format!("Bearer {}", token.trim());
    let authorized = headers
        .get("authorization")
        .is_some_and(|value| value.as_bytes() == expected.as_bytes());
    let tenant = headers
        .get("x-scope-orgid")
        .is_some_and(|value| value.as_bytes() == b"billing");
    if !authorized {
        return (StatusCode::UNAUTHORIZED, "bad or missing token").into_response();
    }
    if !tenant {
        return (StatusCode::BAD_REQUEST, "no org id").into_response();
    }
    let path = uri.path_and_query().map_or("/", |path| path.as_str());
    let mut request = gate
        .http
        .request(method, format!("{}{path}", gate.upstream))
        .body(body);
    if let Some(content_type) = headers.get("content-type") {
        request = request.header("content-type", content_type.as_bytes());
    }
    match request.send().await {
        Ok(answer) => {
            let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::OK);
            let content_type = answer
                .headers()
                .get("content-type")
                .and_then(|value| value.to_str().ok())
                .unwrap_or("application/json")
                .to_owned();
            let bytes = answer.bytes().await.unwrap_or_default();
            (status, [("content-type", content_type)], bytes).into_response()
        }
        Err(error) => (StatusCode::BAD_GATEWAY, error.to_string()).into_response(),
    }
}

#[tokio::test]
async fn headers_and_a_rotated_token_pass_an_authenticating_proxy() {
    let scratch = Scratch::new();
    let prometheus = TestPrometheus::start(&scratch, "plain", None);
    let token_file = scratch.join("token");
    std::fs::write(&token_file, "first-token\n").expect("write the token");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the proxy");
    let proxy: SocketAddr = listener.local_addr().expect("proxy address");
    let state = Arc::new(Gate {
        upstream: format!("http://{}", prometheus.address),
        token_file: token_file.clone(),
        http: reqwest::Client::new(),
    });
    let app = Router::new().fallback(gate).with_state(state);
    tokio::spawn(async move { axum::serve(listener, app).await });
    let url = format!("http://{proxy}");

    let connection = Connection {
        headers: vec![("X-Scope-OrgID".to_owned(), "billing".to_owned())],
        token_file: Some(token_file.clone()),
        ..Connection::default()
    };
    answers(&url, &connection).await;
    let queries = fleet_query().plan(&MetricProfile::default()).len() as u64;

    // One client across a rotation: the token is read again from the file, as a Secret's
    // projected file is swapped (written beside it, renamed over it).
    let source = Prometheus::connect(
        &url,
        &connection,
        MetricProfile::default(),
        Limits::default(),
    )
    .expect("connect");
    source.fleet(&fleet_query()).await;
    assert_eq!(source.query_failures(), 0);
    let next = scratch.join("token.next");
    std::fs::write(&next, "second-token-after-rotation\n").expect("write the new token");
    std::fs::rename(&next, &token_file).expect("rotate the token");
    source.fleet(&fleet_query()).await;
    assert_eq!(source.query_failures(), 0, "the rotated token was not used");

    // Without the tenant header, or with a fixed copy of the old token, the proxy refuses.
    let no_tenant = Connection {
        headers: Vec::new(),
        ..connection.clone()
    };
    assert_eq!(failures(&url, &no_tenant).await, queries);
    let stale = scratch.join("stale-token");
    std::fs::write(&stale, "first-token\n").expect("write the stale token");
    let old_token = Connection {
        token_file: Some(stale),
        ..connection.clone()
    };
    assert_eq!(failures(&url, &old_token).await, queries);
}
