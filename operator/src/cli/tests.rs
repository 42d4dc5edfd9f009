//! The flags the chart and the README rely on, and what they configure. No IO: arguments are
//! given explicitly (`Cli::try_parse_from` would still read a set environment variable, so
//! defaults are read from the command's definition instead).

use std::time::Duration;

use clap::{CommandFactory, Parser};

use super::*;

#[test]
fn the_command_is_well_formed() {
    Cli::command().debug_assert();
}

#[test]
fn every_flag_keeps_its_environment_variable_and_default() {
    let mut command = Cli::command();
    // As when parsing: implied defaults (`false` of a switch) are filled in.
    command.build();
    let expected: &[(&str, &str, Option<&str>)] = &[
        (
            "prometheus-url",
            "PROMETHEUS_URL",
            Some("http://prometheus-operated.monitoring:9090"),
        ),
        ("prometheus-token-file", "PROMETHEUS_TOKEN_FILE", None),
        ("prometheus-ca-file", "PROMETHEUS_CA_FILE", None),
        (
            "prometheus-client-cert-file",
            "PROMETHEUS_CLIENT_CERT_FILE",
            None,
        ),
        (
            "prometheus-client-key-file",
            "PROMETHEUS_CLIENT_KEY_FILE",
            None,
        ),
        ("prometheus-header", "PROMETHEUS_HEADERS", None),
        ("evaluation-interval", "EVALUATION_INTERVAL", Some("15s")),
        ("detection-window", "DETECTION_WINDOW", Some("1m")),
        ("stale-after", "STALE_AFTER", Some("2m")),
        ("storm-share", "STORM_SHARE", Some("0.5")),
        ("storm-min-services", "STORM_MIN_SERVICES", Some("5")),
        ("storm-hold", "STORM_HOLD", Some("2m")),
        ("force-dry-run", "FORCE_DRY_RUN", Some("false")),
        ("namespace", "WATCH_NAMESPACE", None),
        ("leader-election", "LEADER_ELECTION", Some("true")),
        ("lease-name", "LEASE_NAME", Some("invoice-operator")),
        ("lease-namespace", "POD_NAMESPACE", Some("default")),
        ("identity", "POD_NAME", None),
        ("metrics-address", "METRICS_ADDRESS", Some("127.0.0.1:8080")),
        ("query-mode", "QUERY_MODE", Some("batched")),
        ("sli-source", "SLI_SOURCE", Some("raw")),
        ("log-format", "LOG_FORMAT", Some("json")),
        ("metric-requests", "METRIC_REQUESTS", None),
        (
            "metric-request-duration-bucket",
            "METRIC_REQUEST_DURATION_BUCKET",
            None,
        ),
        ("metric-db-pool-active", "METRIC_DB_POOL_ACTIVE", None),
        ("metric-db-pool-max", "METRIC_DB_POOL_MAX", None),
        (
            "metric-certificate-expiry",
            "METRIC_CERTIFICATE_EXPIRY",
            None,
        ),
        ("label-namespace", "LABEL_NAMESPACE", None),
        ("label-service", "LABEL_SERVICE", None),
        ("label-pod", "LABEL_POD", None),
        ("label-zone", "LABEL_ZONE", None),
        ("label-code", "LABEL_CODE", None),
    ];
    let flags: Vec<_> = command
        .get_arguments()
        .filter_map(|argument| argument.get_long())
        .filter(|long| !["help", "version"].contains(long))
        .collect();
    assert_eq!(
        flags,
        expected.iter().map(|(long, ..)| *long).collect::<Vec<_>>()
    );
    for (long, env, default) in expected {
        let argument = command
            .get_arguments()
            .find(|argument| argument.get_long() == Some(long))
            .expect("flag exists");
        assert_eq!(
            argument.get_env().and_then(|env| env.to_str()),
            Some(*env),
            "--{long}"
        );
        let defaults: Vec<_> = argument
            .get_default_values()
            .iter()
            .filter_map(|value| value.to_str())
            .collect();
        assert_eq!(
            defaults,
            default.iter().copied().collect::<Vec<_>>(),
            "--{long}"
        );
    }
}

fn parse(args: &[&str]) -> Cli {
    Cli::try_parse_from(std::iter::once("invoice-operator").chain(args.iter().copied()))
        .expect("flags parse")
}

#[test]
fn flags_become_the_controller_settings() {
    let cli = parse(&[
        "--evaluation-interval=5s",
        "--detection-window=2m",
        "--stale-after=3m",
        "--storm-share=0.25",
        "--storm-min-services=3",
        "--storm-hold=30s",
        "--force-dry-run",
        "--namespace=invoicing",
        "--query-mode=per-service",
    ]);
    let settings = cli.settings();
    assert_eq!(settings.evaluation_interval, Duration::from_secs(5));
    assert_eq!(settings.detection_window, Duration::from_secs(120));
    assert_eq!(settings.stale_after, Duration::from_secs(180));
    assert!((settings.storm.share - 0.25).abs() < f64::EPSILON);
    assert_eq!(settings.storm.min_services, 3);
    assert_eq!(settings.storm.hold, Duration::from_secs(30));
    assert!(settings.force_dry_run);
    assert_eq!(settings.namespace.as_deref(), Some("invoicing"));
    assert_eq!(settings.query_mode, QueryMode::PerService);
}

#[test]
fn metric_flags_override_only_their_name_in_the_profile() {
    let cli = parse(&[
        "--metric-requests=http_requests_total",
        "--metric-db-pool-max=pool_size",
    ]);
    let profile = cli.profile();
    let default = MetricProfile::default();
    assert_eq!(profile.requests_total, "http_requests_total");
    assert_eq!(profile.db_pool_max, "pool_size");
    assert_eq!(
        profile.request_duration_bucket,
        default.request_duration_bucket
    );
    assert_eq!(profile.db_pool_active, default.db_pool_active);
    assert_eq!(profile.certificate_expiry, default.certificate_expiry);
}

#[test]
fn the_lease_carries_the_identity_unless_leader_election_is_off() {
    let cli = parse(&[
        "--identity=operator-0",
        "--lease-name=ops",
        "--lease-namespace=operators",
        "--leader-election=true",
    ]);
    assert_eq!(
        cli.lease(),
        Some(Lease {
            name: "ops".into(),
            namespace: "operators".into(),
            identity: "operator-0".into(),
        })
    );
    assert_eq!(parse(&["--leader-election=false"]).lease(), None);
}

#[test]
fn without_an_identity_the_process_id_names_the_replica() {
    let unnamed = Cli {
        identity: None,
        ..parse(&[])
    };
    assert_eq!(
        unnamed.identity(),
        format!("invoice-operator-{}", std::process::id())
    );
}

/// A metric-name flag that is not a metric name is refused at start, naming the flag (it used
/// to start and then fail every query).
#[test]
fn a_metric_name_flag_that_is_not_a_metric_name_is_refused_naming_the_flag() {
    let error = Cli::try_parse_from([
        "invoice-operator",
        r#"--metric-requests=invoice_http_requests_total{x="a\"}"#,
    ])
    .expect_err("refused");
    let message = error.to_string();
    assert!(message.contains("--metric-requests"), "{message}");
    assert!(
        message.contains("not a Prometheus metric name"),
        "{message}"
    );
    for valid in ["invoice_http_requests_total", "job:requests:rate5m", "_x1"] {
        assert_eq!(metric_name(valid).as_deref(), Ok(valid));
    }
    for invalid in ["", "1abc", "a-b", "a b", "a{b=\"c\"}"] {
        assert!(metric_name(invalid).is_err(), "{invalid:?} accepted");
    }
}

#[test]
fn without_a_subcommand_the_operator_runs() {
    assert!(parse(&["--evaluation-interval=5s"]).command.is_none());
}

#[test]
fn the_rules_subcommand_takes_an_interval_and_the_metric_flags_on_either_side() {
    let rules_of = |args: &[&str]| {
        let cli = parse(args);
        let Some(Command::Rules(rules)) = &cli.command else {
            panic!("{args:?} is not the rules subcommand");
        };
        cli.rules_file(rules)
    };
    let default = rules_of(&["rules"]);
    assert_eq!(
        default,
        rules::rule_file(&MetricProfile::default(), rules::DEFAULT_INTERVAL)
    );
    let custom = MetricProfile {
        requests_total: "http_requests_total".to_owned(),
        ..MetricProfile::default()
    };
    let expected = rules::rule_file(&custom, Duration::from_secs(60));
    for args in [
        &[
            "rules",
            "--interval=1m",
            "--metric-requests=http_requests_total",
        ][..],
        &[
            "--metric-requests=http_requests_total",
            "rules",
            "--interval",
            "1m",
        ][..],
    ] {
        assert_eq!(rules_of(args), expected, "{args:?}");
    }
    for refused in ["--interval=10m", "--interval=0s", "--interval=soon"] {
        assert!(
            Cli::try_parse_from(["invoice-operator", "rules", refused]).is_err(),
            "{refused} accepted"
        );
    }
}

#[test]
fn the_rules_subcommand_prints_the_alerts_with_their_settings() {
    let cli = parse(&[
        "--evaluation-interval=30s",
        "rules",
        "--alerts",
        "--runbook-url=https://docs.example/runbook",
        "--operator-job=ops",
        "--untrusted-intervals=4",
    ]);
    let Some(Command::Rules(args)) = &cli.command else {
        panic!("not the rules subcommand");
    };
    let expected = alerts::alert_file(&alerts::AlertSettings {
        runbook_url: "https://docs.example/runbook".to_owned(),
        operator_job: "ops".to_owned(),
        untrusted_for: Duration::from_secs(120),
    });
    assert_eq!(cli.alert_file(args), expected);
    assert_eq!(cli.rules_text(args), expected.to_yaml());
    let default = parse(&["rules", "--alerts"]);
    let Some(Command::Rules(args)) = &default.command else {
        panic!("not the rules subcommand");
    };
    let expected = alerts::alert_file(&alerts::AlertSettings::default());
    assert_eq!(default.rules_text(args), expected.to_yaml());
    for refused in [
        &["rules", "--operator-job=ops"][..],
        &["rules", "--alerts", "--untrusted-intervals=0"][..],
    ] {
        let args = [&["invoice-operator"][..], refused].concat();
        assert!(Cli::try_parse_from(args).is_err(), "{refused:?} accepted");
    }
}

#[test]
fn the_prometheus_connection_flags_become_the_connection() {
    let cli = parse(&[
        "--prometheus-ca-file=/etc/prometheus-ca/ca.crt",
        "--prometheus-client-cert-file=/tls/tls.crt",
        "--prometheus-client-key-file=/tls/tls.key",
        "--prometheus-header=X-Scope-OrgID=billing",
        "--prometheus-header",
        "X-Extra=a=b",
        "--prometheus-token-file=/token/token",
    ]);
    let connection = cli.prometheus_connection();
    assert_eq!(
        connection,
        Connection {
            ca_file: Some("/etc/prometheus-ca/ca.crt".into()),
            client_certificate: Some("/tls/tls.crt".into()),
            client_key: Some("/tls/tls.key".into()),
            headers: vec![
                ("X-Scope-OrgID".to_owned(), "billing".to_owned()),
                ("X-Extra".to_owned(), "a=b".to_owned()),
            ],
            token_file: Some("/token/token".into()),
        }
    );
    assert!(parse(&[]).prometheus_connection().is_plain());
    for refused in [
        &["--prometheus-client-cert-file=/tls/tls.crt"][..],
        &["--prometheus-client-key-file=/tls/tls.key"][..],
        &["--prometheus-header=no-value"][..],
        &["--prometheus-header=bad name=x"][..],
    ] {
        let args = [&["invoice-operator"][..], refused].concat();
        assert!(Cli::try_parse_from(args).is_err(), "{refused:?} accepted");
    }
}

#[test]
fn label_flags_rename_the_profile_everywhere_and_refuse_non_labels() {
    let cli = parse(&[
        "--label-namespace=kubernetes_namespace",
        "--label-service=app",
        "--label-pod=pod_name",
        "--label-zone=topology_zone",
        "--label-code=status",
    ]);
    let profile = cli.profile();
    assert_eq!(profile.namespace_label, "kubernetes_namespace");
    assert_eq!(profile.service_label, "app");
    assert_eq!(profile.pod_label, "pod_name");
    assert_eq!(profile.zone_label, "topology_zone");
    assert_eq!(profile.code_label, "status");
    // The recording rules follow (the flags are global, so `rules` takes them too).
    let rules = parse(&["rules", "--label-service=app", "--label-code=status"]);
    let Some(Command::Rules(args)) = &rules.command else {
        panic!("not the rules subcommand");
    };
    let text = rules.rules_text(args);
    assert!(
        text.contains("sum by (namespace, app, invoiceops_class)"),
        "{text}"
    );
    assert!(text.contains(r#""status", "([0-9]).."#), "{text}");
    for refused in [
        "--label-service=a:b",
        "--label-pod=__name__",
        "--label-zone=9zone",
    ] {
        assert!(
            Cli::try_parse_from(["invoice-operator", refused]).is_err(),
            "{refused} accepted"
        );
    }
}
