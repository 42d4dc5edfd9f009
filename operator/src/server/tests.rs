//! The routes and their answers, through the router as the kubelet and Prometheus reach it.
//! No IO: requests are handed to the router in memory.

use std::time::Duration;

use axum::body::Body;
use http_body_util::BodyExt as _;
use tower::Service as _;

use super::*;
use crate::liveness::STALE_AFTER;

fn state(ready: bool, heartbeat: Heartbeat) -> ServerState {
    ServerState {
        metrics: Arc::new(Metrics::default()),
        ready: Arc::new(AtomicBool::new(ready)),
        heartbeat,
    }
}

/// Status, content type and body of `GET path`.
async fn get(state: ServerState, path: &str) -> (StatusCode, Option<String>, String) {
    let mut router = router(state);
    std::future::poll_fn(|context| {
        tower::Service::<axum::http::Request<Body>>::poll_ready(&mut router, context)
    })
    .await
    .expect("the router is always ready");
    let response = router
        .call(
            axum::http::Request::get(path)
                .body(Body::empty())
                .expect("request builds"),
        )
        .await
        .expect("the router never fails");
    let status = response.status();
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body reads")
        .to_bytes();
    (
        status,
        content_type,
        String::from_utf8(body.to_vec()).expect("UTF-8 body"),
    )
}

#[tokio::test]
async fn healthz_is_ok_while_the_controller_beats() {
    // Liveness does not wait for the caches: a replica still listing is alive.
    let (status, _, body) = get(state(false, Heartbeat::default()), "/healthz").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
}

#[tokio::test]
async fn healthz_fails_once_the_controller_has_stopped_beating() {
    let stalled = Heartbeat::beaten_ago(STALE_AFTER + Duration::from_secs(30));
    let (status, _, body) = get(state(true, stalled), "/healthz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body.starts_with("controller loop stalled: no heartbeat for 9"),
        "{body}"
    );
}

#[tokio::test]
async fn readyz_answers_once_the_caches_have_synced() {
    let (status, _, body) = get(state(false, Heartbeat::default()), "/readyz").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced")
    );
    let (status, _, body) = get(state(true, Heartbeat::default()), "/readyz").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ready"));
}

#[tokio::test]
async fn metrics_are_served_as_openmetrics_text() {
    let state = state(true, Heartbeat::default());
    state.metrics.leader.set(1);
    let (status, content_type, body) = get(state, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type.as_deref(), Some(OPENMETRICS));
    assert!(body.contains("invoiceops_leader 1"), "{body}");
    assert!(body.ends_with("# EOF\n"), "{body}");
}

#[tokio::test]
async fn other_paths_are_not_found() {
    let (status, _, _) = get(state(true, Heartbeat::default()), "/").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
