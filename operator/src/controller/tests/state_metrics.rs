//! A reconcile exports the service's state as it reported it, and a fleet tick after the
//! service was deleted removes those series.

use super::*;

#[tokio::test]
async fn a_reconcile_exports_the_state_it_reported_and_a_deletion_removes_it() {
    let (client, _server) = api_server();
    let context = one_pod_crash_looping(client);
    let service: InvoiceService = serde_json::from_value(service_object(false)).unwrap();
    reconcile(Arc::new(service), Arc::clone(&context))
        .await
        .unwrap();

    let exported = context.metrics.encode();
    let phases: Vec<&str> = exported
        .lines()
        .filter(|line| line.starts_with("invoiceops_service_phase{"))
        .filter(|line| line.contains("service=\"invoice-api\""))
        .collect();
    assert_eq!(phases.len(), crate::metrics::PHASES.len(), "{exported}");
    let current: Vec<&&str> = phases.iter().filter(|line| line.ends_with(" 1")).collect();
    assert_eq!(current.len(), 1, "one phase at a time: {phases:#?}");
    assert!(
        current[0].contains("value=\"Remediating\""),
        "a pod was just evicted: {phases:#?}"
    );
    assert!(exported.contains(
        "invoiceops_service_mode{namespace=\"invoicing\",service=\"invoice-api\",value=\"Enforce\"} 1"
    ));

    let (services, _writer) = reflector::store::<InvoiceService>();
    context.start_fleet_cycle(&services, Duration::ZERO);
    let exported = context.metrics.encode();
    assert!(!exported.contains("service=\"invoice-api\""), "{exported}");
}
