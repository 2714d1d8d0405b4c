//! docker-compose.yml against the binary it runs.
//!
//! No container engine is needed: the compose file is parsed as YAML and each tlsrpt service's
//! command is checked against the built `tlsrpt` (its subcommands and `--help`), its published
//! ports and health check against its `--*-listen` flags, its S3 settings against the variables
//! the object_store crate reads, and the Kafka service against what a single KRaft node needs.
//! A renamed flag, a moved port or a misspelt variable fails here instead of in a deployment.
//! Every failure names the service and the flag, port or variable at fault.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

use yaml_rust2::{Yaml, YamlLoader};

/// The object_store (0.13) configuration keys for Amazon S3 that
/// `AmazonS3Builder::from_env` takes from the environment: it reads every `AWS_*` variable
/// and keeps those whose lower-cased name parses as an `AmazonS3ConfigKey` (or, after
/// `aws_`, as a client option). A variable outside this set is silently ignored by the
/// services, which is why a typo here is worth a failing test.
const OBJECT_STORE_S3_VARIABLES: &[&str] = &[
    // Credentials and where the store is.
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_BUCKET",
    "AWS_BUCKET_NAME",
    "AWS_VIRTUAL_HOSTED_STYLE_REQUEST",
    "AWS_S3_EXPRESS",
    "AWS_SKIP_SIGNATURE",
    "AWS_UNSIGNED_PAYLOAD",
    "AWS_CHECKSUM_ALGORITHM",
    "AWS_REQUEST_PAYER",
    "AWS_DISABLE_TAGGING",
    // Atomic writes (object_store's rename and create-if-absent on S3).
    "AWS_COPY_IF_NOT_EXISTS",
    "AWS_CONDITIONAL_PUT",
    // Credentials from the platform (EC2, ECS, EKS, STS).
    "AWS_IMDSV1_FALLBACK",
    "AWS_METADATA_ENDPOINT",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_ENDPOINT_URL_STS",
    // Server-side encryption.
    "AWS_SERVER_SIDE_ENCRYPTION",
    "AWS_SSE_KMS_KEY_ID",
    "AWS_SSE_BUCKET_KEY_ENABLED",
    "AWS_SSE_CUSTOMER_KEY_BASE64",
    // HTTP client options, `AWS_` + a `ClientConfigKey`.
    "AWS_ALLOW_HTTP",
    "AWS_ALLOW_INVALID_CERTIFICATES",
    "AWS_CONNECT_TIMEOUT",
    "AWS_TIMEOUT",
    "AWS_POOL_IDLE_TIMEOUT",
    "AWS_POOL_MAX_IDLE_PER_HOST",
    "AWS_PROXY_URL",
    "AWS_PROXY_CA_CERTIFICATE",
    "AWS_PROXY_EXCLUDES",
    "AWS_USER_AGENT",
    "AWS_DEFAULT_CONTENT_TYPE",
    "AWS_HTTP1_ONLY",
    "AWS_HTTP2_ONLY",
    "AWS_HTTP2_KEEP_ALIVE_INTERVAL",
    "AWS_HTTP2_KEEP_ALIVE_TIMEOUT",
    "AWS_HTTP2_KEEP_ALIVE_WHILE_IDLE",
    "AWS_HTTP2_MAX_FRAME_SIZE",
    "AWS_RANDOMIZE_ADDRESSES",
];

// ---- the tlsrpt services ---------------------------------------------------------------------

#[test]
fn ingest_service_matches_the_binary() {
    check_tlsrpt_service("ingest");
}

#[test]
fn transform_service_matches_the_binary() {
    check_tlsrpt_service("transform");
}

#[test]
fn query_service_matches_the_binary() {
    check_tlsrpt_service("query");
}

/// The command runs a subcommand the binary has, with flags its `--help` lists and values it
/// accepts; every published container port is the port of a `--*-listen` flag; the health
/// check asks `/healthz` on the port of an HTTP listen flag.
fn check_tlsrpt_service(name: &str) {
    let compose = Compose::load();
    let service = compose.service(name);
    let mut problems = Vec::new();

    let words = command_words(name, service);
    let Some(subcommand) = words.first() else {
        panic!("service {name}: no command: it would run the image's default (`tlsrpt up`)");
    };
    let known = subcommands();
    if !known.contains(subcommand.as_str()) {
        panic!(
            "service {name}: `{subcommand}` is not a subcommand of tlsrpt (it has: {})",
            known.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }

    // Every flag is in the subcommand's help.
    let help = run_tlsrpt(&[subcommand.as_str(), "--help"]);
    let help_text = String::from_utf8_lossy(&help.stdout).into_owned();
    if !help.status.success() {
        problems.push(format!(
            "`tlsrpt {subcommand} --help` failed: {}",
            String::from_utf8_lossy(&help.stderr).trim()
        ));
    }
    let flags = flags(&words[1..]);
    for (flag, _) in &flags {
        if !mentions_flag(&help_text, flag) {
            problems.push(format!(
                "flag {flag} is not in the output of `tlsrpt {subcommand} --help`"
            ));
        }
    }

    // The whole command line parses (`--help` last: clap checks each value before it).
    if problems.is_empty() {
        let mut args: Vec<&str> = words.iter().map(String::as_str).collect();
        args.push("--help");
        let parsed = run_tlsrpt(&args);
        if !parsed.status.success() {
            problems.push(format!(
                "`tlsrpt {}` is refused: {}",
                words.join(" "),
                String::from_utf8_lossy(&parsed.stderr).trim()
            ));
        }
    }

    // The ports the service listens on, by flag.
    let mut listen = Vec::new();
    for (flag, value) in &flags {
        if !flag.ends_with("-listen") {
            continue;
        }
        match value.as_deref() {
            None => problems.push(format!("flag {flag} has no value")),
            Some("off") => {}
            Some(address) => match port_of_address(address) {
                Some(port) => listen.push((flag.clone(), port)),
                None => problems.push(format!("flag {flag}: {address:?} has no port")),
            },
        }
    }
    if listen.is_empty() {
        problems.push("no --*-listen flag: nothing to publish or health-check".to_owned());
    }

    // Published container ports are listen ports.
    for published in published_ports(name, service) {
        match published {
            Ok(port) => {
                if !listen.iter().any(|(_, p)| *p == port) {
                    problems.push(format!(
                        "publishes container port {port}, but no listen flag uses it ({})",
                        describe_listen(&listen)
                    ));
                }
            }
            Err(entry) => problems.push(format!("cannot read the port entry {entry}")),
        }
    }

    // The health check asks /healthz on an HTTP listen port (SMTP has no /healthz).
    let http_listen: Vec<(String, u16)> = listen
        .iter()
        .filter(|(flag, _)| flag != "--smtp-listen")
        .cloned()
        .collect();
    match healthcheck_text(service) {
        None => problems.push("no health check".to_owned()),
        Some(test) => {
            if !test.contains("/healthz") {
                problems.push(format!("the health check does not ask /healthz: {test}"));
            }
            let ports = ports_in_healthcheck(&test);
            if ports.is_empty() {
                problems.push(format!(
                    "the health check names no local port (127.0.0.1:PORT, localhost:PORT or /dev/tcp/HOST/PORT): {test}"
                ));
            }
            for port in ports {
                if !http_listen.iter().any(|(_, p)| *p == port) {
                    problems.push(format!(
                        "the health check targets port {port}, but no HTTP listen flag uses it ({})",
                        describe_listen(&http_listen)
                    ));
                }
            }
        }
    }

    assert!(
        problems.is_empty(),
        "service {name} (`tlsrpt {}`):\n  - {}",
        words.join(" "),
        problems.join("\n  - ")
    );
}

// ---- the object store ------------------------------------------------------------------------

/// Every `AWS_*` variable given to a service is one object_store reads; a service with an
/// `s3://` store has credentials and a region, and a plain-HTTP endpoint is allowed explicitly
/// and names a service of this file.
#[test]
fn s3_variables_are_ones_object_store_reads() {
    let compose = Compose::load();
    let accepted: BTreeSet<&str> = OBJECT_STORE_S3_VARIABLES.iter().copied().collect();
    let mut problems = Vec::new();
    for (name, service) in compose.services() {
        let environment = environment(&name, service);
        for (variable, _) in &environment {
            if variable.starts_with("AWS_") && !accepted.contains(variable.as_str()) {
                problems.push(format!(
                    "service {name}: {variable} is not a variable object_store reads (see OBJECT_STORE_S3_VARIABLES)"
                ));
            }
        }
        if !tlsrpt_service(service) {
            continue;
        }
        let words = command_words(&name, service);
        let uses_s3 = flags(&words).iter().any(|(flag, value)| {
            flag == "--store" && value.as_deref().is_some_and(|v| v.starts_with("s3://"))
        });
        if !uses_s3 {
            continue;
        }
        let get = |key: &str| {
            environment
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        for required in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
            if get(required).is_none() {
                problems.push(format!("service {name}: --store s3://… without {required}"));
            }
        }
        if get("AWS_REGION").is_none() && get("AWS_DEFAULT_REGION").is_none() {
            problems.push(format!("service {name}: --store s3://… without AWS_REGION"));
        }
        let endpoint = get("AWS_ENDPOINT_URL").or(get("AWS_ENDPOINT"));
        if let Some(endpoint) = endpoint {
            if endpoint.starts_with("http://") && get("AWS_ALLOW_HTTP") != Some("true") {
                problems.push(format!(
                    "service {name}: endpoint {endpoint} is plain HTTP but AWS_ALLOW_HTTP is not \"true\""
                ));
            }
            let host = endpoint
                .split("://")
                .nth(1)
                .and_then(|rest| rest.split([':', '/']).next())
                .unwrap_or_default();
            if !compose.services().any(|(other, _)| other == host) {
                problems.push(format!(
                    "service {name}: endpoint {endpoint} names host {host:?}, which is no service of docker-compose.yml"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "\n  - {}", problems.join("\n  - "));
}

// ---- Kafka -----------------------------------------------------------------------------------

/// The broker is the official Apache Kafka image, one KRaft node (broker and controller, no
/// ZooKeeper), and the tlsrpt services' `--kafka` is the listener it advertises.
#[test]
fn kafka_service_is_apache_kafka_in_kraft_mode() {
    let compose = Compose::load();
    let kafka = compose.service("kafka");
    let mut problems = Vec::new();

    let image = kafka["image"].as_str().unwrap_or_default();
    if !image.starts_with("apache/kafka:") {
        problems.push(format!("image {image:?} is not apache/kafka:<tag>"));
    }

    let environment = environment("kafka", kafka);
    let get = |key: &str| {
        environment
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    match get("KAFKA_PROCESS_ROLES") {
        None => problems.push("KAFKA_PROCESS_ROLES is not set: not KRaft mode".to_owned()),
        Some(roles) => {
            let roles: BTreeSet<&str> = roles.split(',').map(str::trim).collect();
            if roles != BTreeSet::from(["broker", "controller"]) {
                problems.push(format!(
                    "KAFKA_PROCESS_ROLES is {roles:?}: a single node must be broker and controller"
                ));
            }
        }
    }
    for required in [
        "KAFKA_NODE_ID",
        "KAFKA_LISTENERS",
        "KAFKA_ADVERTISED_LISTENERS",
        "KAFKA_CONTROLLER_LISTENER_NAMES",
        "KAFKA_CONTROLLER_QUORUM_VOTERS",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
    ] {
        if get(required).is_none() {
            problems.push(format!("{required} is not set"));
        }
    }
    if get("KAFKA_ZOOKEEPER_CONNECT").is_some() {
        problems.push("KAFKA_ZOOKEEPER_CONNECT is set: KRaft needs no ZooKeeper".to_owned());
    }
    if let (Some(node), Some(voters)) =
        (get("KAFKA_NODE_ID"), get("KAFKA_CONTROLLER_QUORUM_VOTERS"))
        && !voters
            .split(',')
            .any(|voter| voter.trim().starts_with(&format!("{node}@")))
    {
        problems.push(format!(
            "KAFKA_CONTROLLER_QUORUM_VOTERS {voters:?} does not name node {node}"
        ));
    }
    if get("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR").is_some_and(|factor| factor != "1") {
        problems.push("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR must be 1 on one broker".to_owned());
    }
    // The image formats its storage with CLUSTER_ID: a base64url UUID, 22 characters.
    if let Some(id) = get("CLUSTER_ID") {
        let base64url = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if id.len() != 22 || !id.chars().all(base64url) {
            problems.push(format!(
                "CLUSTER_ID {id:?} is not a base64url UUID (22 characters, as `kafka-storage.sh random-uuid` prints)"
            ));
        }
    }
    if healthcheck_text(kafka).is_none() {
        problems.push("no health check (the services wait for it to be healthy)".to_owned());
    }

    // Each tlsrpt service reaches the broker at an advertised listener.
    let advertised: Vec<String> = get("KAFKA_ADVERTISED_LISTENERS")
        .unwrap_or_default()
        .split(',')
        .filter_map(|listener| listener.split("://").nth(1))
        .map(str::to_owned)
        .collect();
    for (name, service) in compose.services() {
        if !tlsrpt_service(service) {
            continue;
        }
        for (flag, value) in flags(&command_words(&name, service)) {
            if flag != "--kafka" {
                continue;
            }
            for broker in value.unwrap_or_default().split(',') {
                if !advertised.iter().any(|a| a == broker) {
                    problems.push(format!(
                        "service {name}: --kafka {broker} is not an advertised listener ({advertised:?})"
                    ));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "service kafka:\n  - {}",
        problems.join("\n  - ")
    );
}

/// Every topic a tlsrpt service names (`--topic`, `--dlq-topic`) is created by the one-shot
/// that runs kafka-topics.sh (the broker does not create topics on first use), and the reports
/// topic has a partition for each transformer.
#[test]
fn topics_used_by_the_services_are_created_by_kafka_init() {
    let compose = Compose::load();
    let mut created: Vec<(String, Option<i64>)> = Vec::new();
    for (_, service) in compose.services() {
        let script = [&service["entrypoint"], &service["command"]]
            .iter()
            .flat_map(|node| strings(node))
            .collect::<Vec<_>>()
            .join("\n");
        if !script.contains("kafka-topics.sh") {
            continue;
        }
        for line in script.lines().filter(|line| line.contains("--create")) {
            let words: Vec<&str> = line.split_whitespace().collect();
            let after = |flag: &str| {
                words
                    .iter()
                    .position(|w| *w == flag)
                    .and_then(|i| words.get(i + 1))
                    .map(|w| (*w).to_owned())
            };
            if let Some(topic) = after("--topic") {
                created.push((topic, after("--partitions").and_then(|p| p.parse().ok())));
            }
        }
    }
    let mut problems = Vec::new();
    for (name, service) in compose.services() {
        if !tlsrpt_service(service) {
            continue;
        }
        let words = command_words(&name, service);
        let replicas = service["deploy"]["replicas"].as_i64().unwrap_or(1);
        for (flag, value) in flags(&words) {
            if flag != "--topic" && flag != "--dlq-topic" {
                continue;
            }
            let topic = value.unwrap_or_default();
            match created.iter().find(|(t, _)| *t == topic) {
                None => problems.push(format!(
                    "service {name}: {flag} {topic} is not created by any kafka-topics.sh --create"
                )),
                Some((_, Some(partitions)))
                    if flag == "--topic" && words[0] == "transform" && *partitions < replicas =>
                {
                    problems.push(format!(
                        "service {name}: {replicas} replicas on {topic}, which has {partitions} partitions (the extra ones would sit idle)"
                    ));
                }
                Some(_) => {}
            }
        }
    }
    assert!(problems.is_empty(), "\n  - {}", problems.join("\n  - "));
}

/// A tlsrpt service waits (depends_on with a condition) for what it needs: its topics created
/// when it talks to Kafka, its bucket created when it uses S3.
#[test]
fn services_wait_for_the_topics_and_the_bucket() {
    let compose = Compose::load();
    let creates = |needle: &str| {
        compose
            .services()
            .filter(|(_, service)| {
                strings(&service["command"])
                    .iter()
                    .any(|c| c.contains(needle))
            })
            .map(|(name, _)| name)
            .collect::<Vec<_>>()
    };
    let topic_jobs = creates("kafka-topics.sh");
    let bucket_jobs = creates("mc mb");
    assert!(
        !topic_jobs.is_empty(),
        "no service creates the Kafka topics (kafka-topics.sh --create)"
    );
    assert!(
        !bucket_jobs.is_empty(),
        "no service creates the S3 bucket (mc mb)"
    );

    let mut problems = Vec::new();
    for (name, service) in compose.services() {
        let depends_on = &service["depends_on"];
        if depends_on.as_vec().is_some_and(|list| !list.is_empty()) {
            problems.push(format!(
                "service {name}: depends_on is a plain list, which waits for nothing; give each a condition"
            ));
        }
        for (other, condition) in depends_on.as_hash().into_iter().flatten() {
            let other = other.as_str().unwrap_or_default();
            let condition = condition["condition"].as_str().unwrap_or_default();
            let target = compose.service_opt(other);
            match target {
                None => problems.push(format!(
                    "service {name}: depends on {other}, which does not exist"
                )),
                Some(target) => {
                    let wanted = if healthcheck_text(target).is_some() {
                        "service_healthy"
                    } else if topic_jobs
                        .iter()
                        .chain(&bucket_jobs)
                        .any(|job| job == other)
                    {
                        "service_completed_successfully"
                    } else {
                        "service_started"
                    };
                    if condition != wanted {
                        problems.push(format!(
                            "service {name}: depends on {other} with condition {condition:?}, expected {wanted:?}"
                        ));
                    }
                }
            }
        }
        if !tlsrpt_service(service) {
            continue;
        }
        let waits_for = |jobs: &[String]| {
            jobs.iter().any(|job| {
                depends_on[job.as_str()]["condition"].as_str()
                    == Some("service_completed_successfully")
            })
        };
        let flags = flags(&command_words(&name, service));
        if flags.iter().any(|(flag, _)| flag == "--kafka") && !waits_for(&topic_jobs) {
            problems.push(format!(
                "service {name}: uses --kafka but does not wait for {topic_jobs:?} to complete"
            ));
        }
        let uses_s3 = flags.iter().any(|(flag, value)| {
            flag == "--store" && value.as_deref().is_some_and(|v| v.starts_with("s3://"))
        });
        if uses_s3 && !waits_for(&bucket_jobs) {
            problems.push(format!(
                "service {name}: uses an s3:// store but does not wait for {bucket_jobs:?} to complete"
            ));
        }
    }
    assert!(problems.is_empty(), "\n  - {}", problems.join("\n  - "));
}

// ---- reading the compose file ----------------------------------------------------------------

struct Compose {
    doc: Yaml,
}

impl Compose {
    fn load() -> Self {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docker-compose.yml");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()));
        let mut docs = YamlLoader::load_from_str(&text)
            .unwrap_or_else(|err| panic!("{} is not valid YAML: {err}", path.display()));
        assert_eq!(
            docs.len(),
            1,
            "{} must hold one YAML document",
            path.display()
        );
        let doc = docs.remove(0);
        assert!(
            doc["services"].is_hash(),
            "{} has no services",
            path.display()
        );
        Self { doc }
    }

    fn services(&self) -> impl Iterator<Item = (String, &Yaml)> {
        self.doc["services"]
            .as_hash()
            .into_iter()
            .flatten()
            .map(|(name, service)| (scalar(name).unwrap_or_default(), service))
    }

    fn service_opt(&self, name: &str) -> Option<&Yaml> {
        let service = &self.doc["services"][name];
        (!service.is_badvalue()).then_some(service)
    }

    fn service(&self, name: &str) -> &Yaml {
        self.service_opt(name)
            .unwrap_or_else(|| panic!("docker-compose.yml has no service {name}"))
    }
}

/// A service that runs the tlsrpt image (built from this repository's Dockerfile).
fn tlsrpt_service(service: &Yaml) -> bool {
    !service["build"].is_badvalue()
        || service["image"]
            .as_str()
            .is_some_and(|i| i.starts_with("tlsrpt"))
}

/// A scalar as text (`1`, `true` and `"1"` alike), as Compose passes it to the container.
fn scalar(node: &Yaml) -> Option<String> {
    match node {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A string, or the strings of a list.
fn strings(node: &Yaml) -> Vec<String> {
    match node {
        Yaml::Array(items) => items.iter().filter_map(scalar).collect(),
        other => scalar(other).into_iter().collect(),
    }
}

/// The command's words. Compose splits a string command like a shell; these commands keep to
/// plain words, so a quote in one is refused rather than guessed at.
fn command_words(name: &str, service: &Yaml) -> Vec<String> {
    match &service["command"] {
        Yaml::Array(items) => items
            .iter()
            .map(|item| {
                scalar(item)
                    .unwrap_or_else(|| panic!("service {name}: a command word is not a string"))
            })
            .collect(),
        Yaml::String(line) => {
            assert!(
                !line.contains(['"', '\'', '\\', '$']),
                "service {name}: the command {line:?} needs shell quoting; write it as a list"
            );
            line.split_whitespace().map(str::to_owned).collect()
        }
        Yaml::BadValue | Yaml::Null => Vec::new(),
        other => panic!("service {name}: the command is neither a string nor a list: {other:?}"),
    }
}

/// `--flag value`, `--flag=value` and bare `--flag`, in order.
fn flags(words: &[String]) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let word = &words[i];
        i += 1;
        if !word.starts_with("--") {
            continue;
        }
        if let Some((flag, value)) = word.split_once('=') {
            out.push((flag.to_owned(), Some(value.to_owned())));
        } else if words.get(i).is_some_and(|next| !next.starts_with("--")) {
            out.push((word.clone(), Some(words[i].clone())));
            i += 1;
        } else {
            out.push((word.clone(), None));
        }
    }
    out
}

/// The environment, in either of Compose's forms (a map, or a list of `KEY=VALUE`).
fn environment(name: &str, service: &Yaml) -> Vec<(String, String)> {
    match &service["environment"] {
        Yaml::Hash(map) => map
            .iter()
            .map(|(key, value)| {
                let key = scalar(key).unwrap_or_else(|| {
                    panic!("service {name}: an environment key is not a string")
                });
                (key, scalar(value).unwrap_or_default())
            })
            .collect(),
        Yaml::Array(items) => items
            .iter()
            .filter_map(scalar)
            .map(|item| match item.split_once('=') {
                Some((key, value)) => (key.to_owned(), value.to_owned()),
                None => (item, String::new()),
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The container side of each `ports:` entry: `"8460"`, `"8460:8460"`,
/// `"127.0.0.1:8461:8461/tcp"`, or the long form with `target:`.
fn published_ports(name: &str, service: &Yaml) -> Vec<Result<u16, String>> {
    let Some(entries) = service["ports"].as_vec() else {
        assert!(
            service["ports"].is_badvalue(),
            "service {name}: ports is not a list"
        );
        return Vec::new();
    };
    entries
        .iter()
        .map(|entry| {
            let container = match entry {
                Yaml::Hash(_) => scalar(&entry["target"]),
                other => scalar(other).map(|short| {
                    let without_protocol = short.split('/').next().unwrap_or_default().to_owned();
                    without_protocol
                        .rsplit(':')
                        .next()
                        .unwrap_or_default()
                        .to_owned()
                }),
            };
            container
                .and_then(|port| port.parse().ok())
                .ok_or_else(|| format!("{entry:?}"))
        })
        .collect()
}

/// The health check's command as one string, or None when there is none or it is disabled.
fn healthcheck_text(service: &Yaml) -> Option<String> {
    let check = &service["healthcheck"];
    if check.is_badvalue() || check["disable"].as_bool() == Some(true) {
        return None;
    }
    let test = strings(&check["test"]);
    (!test.is_empty() && test[0] != "NONE").then(|| test.join(" "))
}

/// Local ports named in a health check: `127.0.0.1:PORT`, `localhost:PORT`, `[::1]:PORT`,
/// `/dev/tcp/HOST/PORT`.
fn ports_in_healthcheck(test: &str) -> Vec<u16> {
    let mut ports = Vec::new();
    let digits = |rest: &str| -> Option<u16> {
        let end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        rest[..end].parse().ok()
    };
    for host in ["127.0.0.1:", "localhost:", "[::1]:"] {
        for (at, _) in test.match_indices(host) {
            ports.extend(digits(&test[at + host.len()..]));
        }
    }
    for (at, _) in test.match_indices("/dev/tcp/") {
        let rest = &test[at + "/dev/tcp/".len()..];
        if let Some(slash) = rest.find('/') {
            ports.extend(digits(&rest[slash + 1..]));
        }
    }
    ports
}

fn port_of_address(address: &str) -> Option<u16> {
    address
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
}

fn describe_listen(listen: &[(String, u16)]) -> String {
    if listen.is_empty() {
        return "none".to_owned();
    }
    listen
        .iter()
        .map(|(flag, port)| format!("{flag} :{port}"))
        .collect::<Vec<_>>()
        .join(", ")
}

// ---- asking the binary -----------------------------------------------------------------------

fn run_tlsrpt(args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tlsrpt"));
    command.args(args);
    // The help shows each flag's environment twin with its value when set: keep it plain.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("TLSRPT_") {
            command.env_remove(key);
        }
    }
    command
        .output()
        .unwrap_or_else(|err| panic!("cannot run tlsrpt {}: {err}", args.join(" ")))
}

/// The subcommands listed under `Commands:` in `tlsrpt --help`.
fn subcommands() -> BTreeSet<String> {
    let output = run_tlsrpt(&["--help"]);
    assert!(output.status.success(), "tlsrpt --help failed");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.lines()
        .skip_while(|line| line.trim() != "Commands:")
        .skip(1)
        .take_while(|line| !line.trim().is_empty())
        .filter(|line| line.starts_with("  ") && !line.starts_with("   "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|word| *word != "help")
        .map(str::to_owned)
        .collect()
}

/// Whether `--flag` appears in the help as a whole flag (not as the start of a longer one).
fn mentions_flag(help: &str, flag: &str) -> bool {
    help.match_indices(flag).any(|(at, _)| {
        let before = help[..at].chars().next_back();
        let after = help[at + flag.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-')
            && !after.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    })
}
