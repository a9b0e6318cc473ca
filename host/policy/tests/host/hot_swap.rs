//! Hot swap with real directories and the real watcher: a new selector dropped in is validated and
//! activated; a broken one is refused and the previous keeps serving; removing it returns to the
//! default; a ConfigMap-style `..data` symlink swap changes the settings; a policy directory
//! created after start, or removed and created again, is watched.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vfpool_policy::{
    ActivePolicies, PolicyInventory, PolicySource, PolicyWatcher, ReloadOutcome, Sources, defaults,
};

use super::common::*;

const CONFIG_V1: &str =
    r#"{"resourceList":[{"resourceName":"mlx","selectors":{"vendors":["15b3"]}}]}"#;
const CONFIG_V2: &str =
    r#"{"resourceList":[{"resourceName":"intel_vfs","selectors":{"vendors":["8086"]}}]}"#;

/// Writes elsewhere in the directory, then renames into place (what operators are told to do).
fn install(dir: &Path, name: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".{name}.tmp"));
    fs::write(&tmp, bytes).unwrap();
    fs::rename(&tmp, dir.join(name)).unwrap();
}

fn pool_names(outcome: &ReloadOutcome) -> Vec<String> {
    outcome
        .active
        .as_ref()
        .map(|a| a.pools.iter().map(|p| p.resource_name.clone()).collect())
        .unwrap_or_default()
}

/// Waits for the next reload that did something (accepted, refused, or ended a refusal).
fn next_decision(rx: &mpsc::Receiver<ReloadOutcome>) -> ReloadOutcome {
    loop {
        let outcome = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the watcher reloads within 20 s");
        if outcome.changed || !outcome.refused.is_empty() || outcome.recovered {
            return outcome;
        }
    }
}

/// Waits for the next reload whose outcome `wanted` picks.
fn recorded(
    rx: &mpsc::Receiver<ReloadOutcome>,
    wanted: impl Fn(&ReloadOutcome) -> bool,
) -> ReloadOutcome {
    loop {
        let outcome = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the watcher reloads within 20 s");
        if wanted(&outcome) {
            return outcome;
        }
    }
}

/// Starts the real watcher (50 ms debounce) with a channel receiving a copy of every outcome.
fn spawn_recording(
    active: &Arc<ActivePolicies>,
    sources: &Sources,
) -> (PolicyWatcher, mpsc::Receiver<ReloadOutcome>) {
    spawn_recording_every(active, sources, Duration::from_secs(30))
}

/// [`spawn_recording`], looking at the files every `recheck`.
fn spawn_recording_every(
    active: &Arc<ActivePolicies>,
    sources: &Sources,
    recheck: Duration,
) -> (PolicyWatcher, mpsc::Receiver<ReloadOutcome>) {
    let (tx, rx) = mpsc::channel();
    let watcher = PolicyWatcher::spawn(
        Arc::clone(active),
        sources.clone(),
        Duration::from_millis(50),
        recheck,
        test_inventory,
        move |outcome: &ReloadOutcome| {
            let _ = tx.send(outcome.clone());
        },
    )
    .unwrap();
    (watcher, rx)
}

/// Where the host reads from: `policy_dir` and `config_file`, the default prefix `intel.com`.
fn sources(
    policy_dir: Option<std::path::PathBuf>,
    config_file: Option<std::path::PathBuf>,
) -> Sources {
    Sources {
        policy_dir,
        config_file,
        default_resource_prefix: "intel.com".into(),
    }
}

#[test]
fn drop_in_swap_refuse_and_fall_back() {
    let policies = tempfile::tempdir().unwrap();
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("config.json");
    fs::write(&config, CONFIG_V1).unwrap();
    let sources = sources(Some(policies.path().to_path_buf()), Some(config.clone()));
    let active = Arc::new(ActivePolicies::new(engine().clone()).unwrap());
    let first = active.reload(&sources, &test_inventory());
    assert!(
        first.changed && first.refused.is_empty(),
        "{:?}",
        first.refused
    );
    assert_eq!(pool_names(&first), ["intel.com/mlx"]);

    let (_watcher, rx) = spawn_recording(&active, &sources);

    // A new selector: activated, new pools.
    install(policies.path(), "selector.wasm", &component("probe"));
    let outcome = next_decision(&rx);
    assert!(outcome.changed, "refused: {:?}", outcome.refused);
    assert_eq!(pool_names(&outcome), ["example.com/probe"]);
    let current = active.current().unwrap();
    assert_eq!(current.selector.id().name, "selector.wasm");
    assert!(matches!(current.selector_source, PolicySource::File(_)));
    // The probe also exports an allocator: it replaces the default one too.
    assert_eq!(current.allocator.id().name, "selector.wasm");

    // A broken module in its place: refused, the probe keeps serving.
    let half = &defaults::UPSTREAM_SELECTOR[..1000];
    install(policies.path(), "selector.wasm", half);
    let outcome = next_decision(&rx);
    assert!(!outcome.changed);
    assert!(
        outcome
            .refused
            .iter()
            .any(|r| r.contains("selector.wasm") && r.contains("not loaded")),
        "{:?}",
        outcome.refused
    );
    assert_eq!(pool_names(&outcome), ["example.com/probe"]);
    assert_eq!(active.current().unwrap().generation, current.generation);

    // The broken file is still there: restoring the probe file gives back exactly the active set
    // (no change to make). Then settings under which the probe traps: refused too.
    install(policies.path(), "selector.wasm", &component("probe"));
    fs::write(&config, "probe:trap").unwrap();
    let outcome = next_decision(&rx);
    assert!(!outcome.changed);
    assert!(
        outcome.refused[0].contains("trapped"),
        "{:?}",
        outcome.refused
    );
    fs::write(&config, CONFIG_V1).unwrap();

    // Editor and temp files are ignored, never loaded.
    fs::write(policies.path().join("selector.wasm~"), b"junk").unwrap();
    // Removing the module returns to the embedded defaults.
    fs::remove_file(policies.path().join("selector.wasm")).unwrap();
    let outcome = next_decision(&rx);
    assert!(outcome.changed, "{:?}", outcome.refused);
    assert_eq!(pool_names(&outcome), ["intel.com/mlx"]);
    assert!(
        outcome.ignored.iter().any(|n| n.contains("selector.wasm~")),
        "{:?}",
        outcome.ignored
    );
    assert_eq!(
        active.current().unwrap().selector_source,
        PolicySource::Embedded
    );

    // A module with the wrong exports is not loaded, with a warning; the defaults keep serving.
    install(policies.path(), "greeter.wasm", &component("wrong_exports"));
    let outcome = recorded(&rx, |o| !o.not_policies.is_empty());
    assert!(
        !outcome.changed && outcome.refused.is_empty(),
        "{outcome:?}"
    );
    assert!(
        outcome
            .not_policies
            .iter()
            .any(|r| r.contains("greeter.wasm") && r.contains("exports neither")),
        "{:?}",
        outcome.not_policies
    );
    assert_eq!(pool_names(&outcome), ["intel.com/mlx"]);
}

/// A ConfigMap volume: `config.json -> ..data/config.json`, `..data -> ..v1`; an update creates
/// `..v2` and renames a new `..data` symlink over the old one.
#[test]
fn configmap_symlink_swap_changes_settings() {
    let mount = tempfile::tempdir().unwrap();
    let root = mount.path();
    fs::create_dir(root.join("..v1")).unwrap();
    fs::write(root.join("..v1/config.json"), CONFIG_V1).unwrap();
    symlink("..v1", root.join("..data")).unwrap();
    symlink("..data/config.json", root.join("config.json")).unwrap();
    let sources = sources(None, Some(root.join("config.json")));
    let active = Arc::new(ActivePolicies::new(engine().clone()).unwrap());
    assert_eq!(
        pool_names(&active.reload(&sources, &test_inventory())),
        ["intel.com/mlx"]
    );
    let (_watcher, rx) = spawn_recording(&active, &sources);

    fs::create_dir(root.join("..v2")).unwrap();
    fs::write(root.join("..v2/config.json"), CONFIG_V2).unwrap();
    symlink("..v2", root.join("..data_tmp")).unwrap();
    fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    fs::remove_dir_all(root.join("..v1")).unwrap();
    let outcome = next_decision(&rx);
    assert!(outcome.changed, "{:?}", outcome.refused);
    assert_eq!(pool_names(&outcome), ["intel.com/intel_vfs"]);

    // A broken config through the same mechanism: refused, naming the field; old pools stay.
    fs::create_dir(root.join("..v3")).unwrap();
    fs::write(
        root.join("..v3/config.json"),
        r#"{"resourceList":[{"resourceName":"bad name","selectors":{}}]}"#,
    )
    .unwrap();
    symlink("..v3", root.join("..data_tmp")).unwrap();
    fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    let outcome = next_decision(&rx);
    assert!(!outcome.changed);
    assert!(
        outcome.refused[0].contains("resourceList[0].resourceName"),
        "{:?}",
        outcome.refused
    );
    // The config file's fault, named as such (it used to read as the policy failing).
    let file = root.join("config.json").display().to_string();
    assert!(
        outcome.refused[0].starts_with(&format!("the config file {file} is refused: ")),
        "{:?}",
        outcome.refused
    );
    assert!(!outcome.recovered);
    assert_eq!(pool_names(&outcome), ["intel.com/intel_vfs"]);

    // The operator puts the active config back: nothing to change, but the refusal is over, and
    // the outcome says so (the agent logs it, so the warning is not the last word).
    symlink("..v2", root.join("..data_tmp")).unwrap();
    fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    let outcome = next_decision(&rx);
    assert!(
        !outcome.changed && outcome.refused.is_empty(),
        "{outcome:?}"
    );
    assert!(outcome.recovered, "{outcome:?}");
    assert_eq!(pool_names(&outcome), ["intel.com/intel_vfs"]);
}

/// The default policy directory often does not exist when the agent starts; an operator who
/// creates it later (one level at a time, as `mkdir` without `-p` does) and drops a module in
/// gets it hot-swapped without a restart.
#[test]
fn policy_dir_created_after_start_is_watched() {
    let root = tempfile::tempdir().unwrap();
    let policies = root.path().join("etc/vfpool/policies");
    let config = root.path().join("config.json");
    fs::write(&config, CONFIG_V1).unwrap();
    let sources = sources(Some(policies.clone()), Some(config));
    let active = Arc::new(ActivePolicies::new(engine().clone()).unwrap());
    assert_eq!(
        pool_names(&active.reload(&sources, &test_inventory())),
        ["intel.com/mlx"]
    );
    let (watcher, rx) = spawn_recording(&active, &sources);
    assert_eq!(watcher.watched(), [root.path().to_path_buf()]);

    fs::create_dir(root.path().join("etc")).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    fs::create_dir(root.path().join("etc/vfpool")).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    fs::create_dir(&policies).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    install(&policies, "selector.wasm", &component("probe"));
    let outcome = next_decision(&rx);
    assert!(outcome.changed, "refused: {:?}", outcome.refused);
    assert_eq!(pool_names(&outcome), ["example.com/probe"]);
    let mut watched = watcher.watched();
    watched.sort();
    assert_eq!(watched, [root.path().to_path_buf(), policies]);
}

/// A policy directory removed and created again (a volume remounted, `rm -rf` + `mkdir`) is a new
/// inode: the old watch ended with the old directory, and the new one is watched again.
#[test]
fn policy_dir_removed_and_recreated_is_watched_again() {
    let root = tempfile::tempdir().unwrap();
    let policies = root.path().join("policies");
    fs::create_dir(&policies).unwrap();
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("config.json");
    fs::write(&config, CONFIG_V1).unwrap();
    install(&policies, "selector.wasm", &component("probe"));
    let sources = sources(Some(policies.clone()), Some(config));
    let active = Arc::new(ActivePolicies::new(engine().clone()).unwrap());
    assert_eq!(
        pool_names(&active.reload(&sources, &test_inventory())),
        ["example.com/probe"]
    );
    let (watcher, rx) = spawn_recording(&active, &sources);

    // Removed: back to the embedded defaults, and the parent is watched meanwhile.
    fs::remove_dir_all(&policies).unwrap();
    let outcome = next_decision(&rx);
    assert!(outcome.changed, "refused: {:?}", outcome.refused);
    assert_eq!(pool_names(&outcome), ["intel.com/mlx"]);
    assert!(watcher.watched().contains(&root.path().to_path_buf()));

    // Created again, empty first so the module arrives through the new watch.
    fs::create_dir(&policies).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    install(&policies, "selector.wasm", &component("probe"));
    let outcome = next_decision(&rx);
    assert!(outcome.changed, "refused: {:?}", outcome.refused);
    assert_eq!(pool_names(&outcome), ["example.com/probe"]);
    assert!(watcher.watched().contains(&policies));
    assert!(!watcher.watched().contains(&root.path().to_path_buf()));
}

/// Refused reloads keep only the compiled modules still in the directory (and the active set's):
/// a module rebuilt again and again next to a broken file used to stay compiled in memory, every
/// version of it, until some reload was accepted.
#[test]
fn refused_reloads_do_not_pile_up_compiled_modules() {
    let policies = tempfile::tempdir().unwrap();
    let sources = sources(Some(policies.path().to_path_buf()), None);
    let active = ActivePolicies::new(engine().clone()).unwrap();
    // A whole module that is refused (its allocator export has the wrong types); a half-written
    // one would only be ignored.
    install(
        policies.path(),
        "broken.wasm",
        &component("mistyped_allocator"),
    );
    let versions: [&[u8]; 3] = [
        defaults::UPSTREAM_SELECTOR,
        defaults::PACKED_ALLOCATOR,
        &component("probe"),
    ];
    for bytes in versions {
        install(policies.path(), "mine.wasm", bytes);
        let outcome = active.reload(&sources, &test_inventory());
        assert!(
            !outcome.refused.is_empty(),
            "the broken file refuses the set"
        );
        assert!(
            active.compiled_count() <= 1,
            "{} compiled modules kept",
            active.compiled_count()
        );
    }
}

/// The same module installed under a new name each time (a deploy naming files after releases)
/// stays compiled once: the cache was pruned by digest only, so the bytes stayed compiled under
/// every name they ever had (a few MB and a memory-image descriptor each, measured growing).
#[test]
fn a_module_renamed_again_and_again_is_compiled_once() {
    let policies = tempfile::tempdir().unwrap();
    let sources = sources(Some(policies.path().to_path_buf()), None);
    let active = ActivePolicies::new(engine().clone()).unwrap();
    let mut previous: Option<String> = None;
    for release in 0..4 {
        let name = format!("selector-{release}.wasm");
        install(policies.path(), &name, defaults::UPSTREAM_SELECTOR);
        if let Some(old) = previous.replace(name) {
            fs::remove_file(policies.path().join(old)).unwrap();
        }
        let outcome = active.reload(&sources, &test_inventory());
        assert!(outcome.refused.is_empty(), "{:?}", outcome.refused);
        assert_eq!(active.compiled_count(), 1, "release {release}");
    }
}

/// A reload that panics (here the callback, standing in for a bug anywhere in a reload) does not
/// end hot swap: the next change is still picked up. The watcher thread used to die silently.
#[test]
fn a_panicking_reload_does_not_stop_the_watcher() {
    let policies = tempfile::tempdir().unwrap();
    let sources = sources(Some(policies.path().to_path_buf()), None);
    let active = Arc::new(ActivePolicies::new(engine().clone()).unwrap());
    assert!(active.reload(&sources, &test_inventory()).changed);
    let (tx, rx) = mpsc::channel();
    let mut calls = 0;
    let _watcher = PolicyWatcher::spawn(
        Arc::clone(&active),
        sources.clone(),
        Duration::from_millis(50),
        Duration::from_secs(30),
        test_inventory,
        move |outcome: &ReloadOutcome| {
            calls += 1;
            assert!(calls > 1, "the first reload panics");
            let embedded = outcome
                .active
                .as_ref()
                .is_some_and(|a| a.selector_source == PolicySource::Embedded);
            let _ = tx.send(embedded);
        },
    )
    .unwrap();
    install(policies.path(), "first.wasm", &component("probe"));
    // The first reload's callback panics; wait until that reload has happened.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while active.current().unwrap().selector.id().name != "first.wasm" {
        assert!(std::time::Instant::now() < deadline, "never reloaded");
        std::thread::sleep(Duration::from_millis(20));
    }
    fs::remove_file(policies.path().join("first.wasm")).unwrap();
    // Reloads of events already queued (the write and the rename may be separate batches) may
    // come first; the one after the removal returns to the embedded default.
    loop {
        let embedded = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the watcher still reloads after a panic");
        if embedded {
            break;
        }
    }
    assert_eq!(
        active.current().unwrap().selector_source,
        PolicySource::Embedded
    );
}

/// A policy directory that is a symlink retargeted to another directory (the swap happens in its
/// parent, which is not watched: no event) is noticed by the periodic look. Hot swap used to stop
/// silently.
#[test]
fn a_retargeted_policy_dir_symlink_is_noticed() {
    let root = tempfile::tempdir().unwrap();
    fs::create_dir(root.path().join("v1")).unwrap();
    fs::create_dir(root.path().join("v2")).unwrap();
    install(
        &root.path().join("v2"),
        "selector.wasm",
        &component("probe"),
    );
    let policies = root.path().join("policies");
    symlink("v1", &policies).unwrap();
    // The config elsewhere: its directory's watch would see the symlink's rename.
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("config.json");
    fs::write(&config, CONFIG_V1).unwrap();
    let sources = sources(Some(policies.clone()), Some(config));
    let active = Arc::new(ActivePolicies::new(engine().clone()).unwrap());
    assert_eq!(
        pool_names(&active.reload(&sources, &test_inventory())),
        ["intel.com/mlx"]
    );
    let (_watcher, rx) = spawn_recording_every(&active, &sources, Duration::from_millis(200));
    // Past the watcher's start (its own reads make events, and any event re-arms the watches).
    std::thread::sleep(Duration::from_millis(500));
    let next = root.path().join(".policies.new");
    symlink("v2", &next).unwrap();
    fs::rename(&next, &policies).unwrap();
    let outcome = next_decision(&rx);
    assert!(outcome.changed, "refused: {:?}", outcome.refused);
    assert_eq!(pool_names(&outcome), ["example.com/probe"]);
}

/// A first policy set refused because of the inventory (the selector names a device the node does
/// not have yet) is tried again, and accepted once the device is there: nothing else would reload
/// it (no file changes), and the node served no pools until a restart.
#[test]
fn a_refused_first_set_is_retried() {
    let root = tempfile::tempdir().unwrap();
    let policies = root.path().join("policies");
    fs::create_dir(&policies).unwrap();
    install(&policies, "selector.wasm", &component("probe"));
    let config = root.path().join("config.json");
    fs::write(&config, "probe:unknown-device").unwrap();
    let sources = sources(Some(policies), Some(config));
    let active = Arc::new(ActivePolicies::new(engine().clone()).unwrap());
    let first = active.reload(&sources, &test_inventory());
    assert!(!first.refused.is_empty() && active.current().is_none());

    // The device appears (VFs created after the agent started).
    let grown = grown_inventory();
    let (tx, rx) = mpsc::channel();
    let _watcher = PolicyWatcher::spawn(
        Arc::clone(&active),
        sources,
        Duration::from_millis(50),
        Duration::from_millis(100),
        move || grown.clone(),
        move |outcome: &ReloadOutcome| {
            let _ = tx.send(outcome.changed);
        },
    )
    .unwrap();
    assert!(
        rx.recv_timeout(Duration::from_secs(20))
            .expect("the refused set is tried again"),
        "tried again, and refused"
    );
    assert!(active.current().is_some());
}

/// A module in the directory that is not active (a second selector, after the first by name) stays
/// compiled across reloads: every reload checks it, and it used to be compiled again each time (a
/// Python module takes seconds), because a swap kept only the active set's modules.
#[test]
fn inactive_modules_in_the_directory_stay_compiled() {
    let policies = tempfile::tempdir().unwrap();
    let sources = sources(Some(policies.path().to_path_buf()), None);
    let active = ActivePolicies::new(engine().clone()).unwrap();
    install(policies.path(), "a.wasm", &component("probe"));
    install(policies.path(), "b.wasm", defaults::UPSTREAM_SELECTOR);
    let first = active.reload(&sources, &test_inventory());
    assert!(first.changed, "{:?}", first.refused);
    assert_eq!(active.current().unwrap().selector.id().name, "a.wasm");
    assert_eq!(active.compiled_count(), 2, "b.wasm was dropped");
}

/// The test node plus the VF `0000:ff:1f.7` that the probe's `unknown-device` mode names.
fn grown_inventory() -> PolicyInventory {
    let mut node = test_node();
    let mut late = node.devices[0].clone();
    late.id = "0000:ff:1f.7".into();
    late.kind = vfpool_sysfs::DeviceKind::Vf;
    late.sriov_total_vfs = None;
    late.sriov_num_vfs = None;
    node.devices.push(late);
    PolicyInventory::new(&node, &Default::default())
}

/// With a set active, a config naming devices the node does not have yet (written before
/// `sriov_numvfs`) is refused; once a rescan finds them (a new inventory), it is tried again and
/// accepted, with no file touched. Only a refused *first* set used to be tried again: the old set
/// kept serving until SIGHUP or another edit.
#[test]
fn a_set_refused_on_the_inventory_is_retried_when_the_inventory_changes() {
    let policies = tempfile::tempdir().unwrap();
    install(policies.path(), "selector.wasm", &component("probe"));
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("config.json");
    fs::write(&config, CONFIG_V1).unwrap();
    let sources = sources(Some(policies.path().to_path_buf()), Some(config.clone()));
    let active = Arc::new(ActivePolicies::new(engine().clone()).unwrap());
    let inventory = Arc::new(Mutex::new(Arc::new(test_inventory())));
    let first = active.reload(&sources, &inventory.lock().unwrap());
    assert!(first.changed, "{:?}", first.refused);
    let (tx, rx) = mpsc::channel();
    let shared = Arc::clone(&inventory);
    let _watcher = PolicyWatcher::spawn(
        Arc::clone(&active),
        sources,
        Duration::from_millis(50),
        // Looks often: a retry is due at the first look after the inventory changed.
        Duration::from_millis(100),
        move || Arc::clone(&shared.lock().unwrap()),
        move |outcome: &ReloadOutcome| {
            let _ = tx.send(outcome.clone());
        },
    )
    .unwrap();

    fs::write(&config, "probe:unknown-device").unwrap();
    let outcome = next_decision(&rx);
    assert!(!outcome.changed);
    assert!(
        outcome.refused.iter().any(|r| r.contains("0000:ff:1f.7")),
        "{:?}",
        outcome.refused
    );
    assert_eq!(active.current().unwrap().settings.config, CONFIG_V1);
    assert!(
        active
            .pending_retry()
            .is_some_and(|r| r.on_inventory_change.is_some()),
        "{:?}",
        active.pending_retry()
    );

    // The VFs appear: the agent's rescan publishes a new inventory. No file changes.
    *inventory.lock().unwrap() = Arc::new(grown_inventory());
    let outcome = next_decision(&rx);
    assert!(outcome.changed, "refused: {:?}", outcome.refused);
    let current = active.current().unwrap();
    assert_eq!(current.settings.config, "probe:unknown-device");
    assert_eq!(current.generation, 2);
    assert_eq!(active.pending_retry(), None);
}

/// The same bytes under two names (a module copied rather than renamed) are compiled once each
/// and stay compiled: both used to be compiled again on every reload, as each evicted the other
/// from a cache keyed by digest alone.
#[test]
fn identical_modules_under_two_names_are_not_recompiled() {
    let policies = tempfile::tempdir().unwrap();
    install(policies.path(), "a.wasm", &component("probe"));
    install(policies.path(), "b.wasm", &component("probe"));
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("config.json");
    fs::write(&config, CONFIG_V1).unwrap();
    let sources = sources(Some(policies.path().to_path_buf()), Some(config.clone()));
    let active = ActivePolicies::new(engine().clone()).unwrap();
    let first = active.reload(&sources, &test_inventory());
    assert!(first.changed, "{:?}", first.refused);
    let compiled = Arc::clone(&active.current().unwrap().selector);
    assert_eq!(compiled.id().name, "a.wasm");
    assert_eq!(active.compiled_count(), 2);

    // A settings change: a new set, with the module as compiled the first time.
    fs::write(&config, CONFIG_V2).unwrap();
    let second = active.reload(&sources, &test_inventory());
    assert!(second.changed, "{:?}", second.refused);
    let current = active.current().unwrap();
    assert!(
        Arc::ptr_eq(&current.selector, &compiled),
        "a.wasm was compiled again"
    );
    assert_eq!(active.compiled_count(), 2);
}

/// With `--config-file` in a busy directory (`/etc`, a shared hostPath), other files changing
/// there do not reload (each reload re-reads and hashes every module); the config file itself
/// still does.
#[test]
fn unrelated_files_in_the_config_directory_do_not_reload() {
    let policies = tempfile::tempdir().unwrap();
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("config.json");
    fs::write(&config, CONFIG_V1).unwrap();
    let sources = sources(Some(policies.path().to_path_buf()), Some(config.clone()));
    let active = Arc::new(ActivePolicies::new(engine().clone()).unwrap());
    assert!(active.reload(&sources, &test_inventory()).changed);
    let (_watcher, rx) = spawn_recording(&active, &sources);

    // Churn in separate bursts (each would be its own debounced reload), then a pause so that
    // any reload they caused comes before the config change's.
    for i in 0..5 {
        fs::write(config_dir.path().join(format!("other-{i}.conf")), "x").unwrap();
        fs::write(config_dir.path().join("mtab"), format!("{i}")).unwrap();
        std::thread::sleep(Duration::from_millis(150));
    }
    std::thread::sleep(Duration::from_millis(500));
    fs::write(&config, CONFIG_V2).unwrap();
    let outcome = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the config change reloads");
    assert!(
        outcome.changed,
        "a reload before the config change (refused: {:?})",
        outcome.refused
    );
    assert_eq!(pool_names(&outcome), ["intel.com/intel_vfs"]);
}
