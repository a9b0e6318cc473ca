//! The simulator refuses impossible nodes with messages that name the key, and never writes over
//! existing files.

// Test helpers unwrap: a failure there is a failed test with a backtrace.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use vfpool_sysfs::sim::{Fixture, SimError, write_tree};

const PF: &str = r#"
[[function]]
address = "0000:3b:00.0"
vendor = "15b3"
device = "1017"
class = "020000"
driver = "mlx5_core"
netdevs = ["ens1f0"]
total_vfs = 4
"#;

fn error_of(text: &str) -> String {
    Fixture::from_toml(text, "my-node.toml")
        .unwrap_err()
        .to_string()
}

#[test]
fn unknown_and_mistyped_keys_are_named() {
    let e = error_of(&format!("{PF}numa = 0\n"));
    assert!(e.contains("my-node.toml") && e.contains("numa"), "{e}");
    let e = error_of(&PF.replace("total_vfs = 4", "total_vfs = \"four\""));
    assert!(e.contains("total_vfs"), "{e}");
}

#[test]
fn impossible_nodes_are_refused_with_the_field_and_the_fix() {
    let cases = [
        (PF.replace("0000:3b:00.0", "3b:00.0"), "function[0].address"),
        (PF.replace("\"15b3\"", "\"15b\""), "function[0].vendor"),
        (format!("{PF}{PF}"), "listed twice"),
        (
            format!("{PF}[function.vfs]\ncount = 5\ndevice = \"1018\"\n"),
            "function[0].vfs.count",
        ),
        (
            format!("{PF}[function.vfs]\ncount = 2\ndevice = \"1018\"\nmoved_to_pod = \"1-x\"\n"),
            "function[0].vfs.moved_to_pod",
        ),
        (
            format!(
                "{PF}[function.vfs]\ncount = 2\ndevice = \"1018\"\ndrivers = {{ \"3-1\" = \"vfio-pci\" }}\n"
            ),
            "function[0].vfs.drivers",
        ),
        (
            // VF 0 would land on the PF's own address.
            format!("{PF}[function.vfs]\ncount = 2\ndevice = \"1018\"\noffset = 0\n"),
            "another function already uses",
        ),
        (
            PF.replace("total_vfs = 4\n", "") + "[function.vfs]\ncount = 2\ndevice = \"1018\"\n",
            "set total_vfs",
        ),
    ];
    for (text, expected) in cases {
        let e = error_of(&text);
        assert!(e.contains(expected), "expected {expected:?} in: {e}");
    }
}

#[test]
fn unknown_fixture_names_list_the_shipped_ones() {
    let e = Fixture::load("no-such-node").unwrap_err();
    assert!(matches!(e, SimError::FixtureUnreadable { .. }));
    assert!(e.to_string().contains("dell-cx5"), "{e}");
}

/// A fixture path that is a FIFO used to block `vfpool sim` forever (and `/dev/zero` to read until
/// memory ran out); a file that is not UTF-8 was reported as unreadable. Each is refused, saying
/// what is wrong with the file.
#[test]
fn fixture_paths_that_cannot_be_fixtures_are_refused_promptly() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.toml");
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .unwrap();
    let binary = dir.path().join("binary.toml");
    std::fs::write(&binary, b"name = \"\xff\"\n").unwrap();
    let huge = dir.path().join("huge.toml");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(5 << 20)
        .unwrap();
    let cases = [
        (fifo.display().to_string(), "not a regular file"),
        ("/dev/zero".to_string(), "not a regular file"),
        (dir.path().display().to_string(), "not a regular file"),
        (binary.display().to_string(), "not UTF-8"),
        (huge.display().to_string(), "larger than"),
    ];
    for (path, expected) in cases {
        // On a thread, so that a regression fails the test instead of hanging it.
        let (sender, receiver) = std::sync::mpsc::channel();
        let name = path.clone();
        std::thread::spawn(move || sender.send(Fixture::load(&name).map(|_| ())));
        let result = receiver
            .recv_timeout(std::time::Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("loading {path} did not return"));
        let e = result.unwrap_err();
        assert!(
            matches!(e, SimError::FixtureNotText { .. }),
            "{path}: {e:?}"
        );
        assert!(e.to_string().contains(expected), "{path}: {e}");
    }
}

/// The writer puts each function below a made-up root port on the bus before it, at `<bus-1>:00.0`:
/// a fixture with a function at `0000:3b:00.0` and another at `0000:3c:00.0` (adjacent buses, as
/// on many servers) failed with "File exists" halfway, leaving a partial tree.
#[test]
fn functions_on_adjacent_buses_are_written_and_discovered() {
    let text = format!(
        "{PF}{}",
        PF.replace("0000:3b:00.0", "0000:3c:00.0")
            .replace("ens1f0", "ens2f0")
    );
    let fixture = Fixture::from_toml(&text, "adjacent.toml").unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_tree(&fixture, dir.path()).unwrap();
    let inventory = vfpool_sysfs::discover(&vfpool_sysfs::SysfsRoot::new(dir.path())).unwrap();
    let ids: Vec<&str> = inventory.devices.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["0000:3b:00.0", "0000:3c:00.0"]);
}

#[test]
fn the_simulator_never_writes_into_a_non_empty_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("precious"), "data").unwrap();
    let fixture = Fixture::load("dell-cx5").unwrap();
    let e = write_tree(&fixture, dir.path()).unwrap_err();
    assert!(matches!(e, SimError::OutputNotEmpty(_)), "{e:?}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

/// Names in a fixture become path components; one with `..` used to make the writer create files
/// outside the output directory (a netdev named `../../../x` landed beside it).
#[test]
fn names_that_would_leave_the_output_directory_are_refused() {
    let outer = tempfile::tempdir().unwrap();
    let out = outer.path().join("node");
    for (from, to) in [
        ("netdevs = [\"ens1f0\"]", "netdevs = [\"../../../escaped\"]"),
        ("driver = \"mlx5_core\"", "driver = \"../../escaped\""),
        ("netdevs = [\"ens1f0\"]", "netdevs = [\"..\"]"),
    ] {
        let text = PF.replace(from, to);
        assert_ne!(text, PF);
        let fixture = Fixture::from_toml(&text, "hostile.toml").unwrap();
        let e = write_tree(&fixture, &out).unwrap_err();
        assert!(matches!(e, SimError::UnsafeName { .. }), "{to}: {e:?}");
        assert!(
            e.to_string().contains("must not be empty or contain '..'"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&out);
        let left: Vec<_> = std::fs::read_dir(outer.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "{to}: wrote {left:?} outside the node");
    }
}

/// VF index ranges name VFs of the function: `moved_to_pod = "0-4000000000"` used to be expanded
/// into four billion indexes (16 GB) and abort the process. An index with no VF behind it is
/// refused, naming the key, before anything is expanded.
#[test]
fn vf_index_ranges_beyond_the_vfs_are_refused_with_the_field() {
    let vfs = format!("{PF}[function.vfs]\ncount = 2\ndevice = \"1018\"\ndriver = \"mlx5_core\"\n");
    let cases = [
        (
            format!("{vfs}no_iommu = \"2\"\n"),
            "function[0].vfs.no_iommu",
        ),
        (
            format!("{vfs}drivers = {{ \"1-2\" = \"vfio-pci\" }}\n"),
            "function[0].vfs.drivers",
        ),
        (
            format!("{vfs}vdpa = {{ \"0-9\" = \"vhost\" }}\n"),
            "function[0].vfs.vdpa",
        ),
        (
            format!("{vfs}moved_to_pod = \"0-4000000000\"\n"),
            "function[0].vfs.moved_to_pod",
        ),
        (
            format!("{vfs}moved_to_pod = \"4000000000-4294967295\"\n"),
            "function[0].vfs.moved_to_pod",
        ),
    ];
    for (text, field) in cases {
        let e = error_of(&text);
        assert!(
            e.contains(field) && e.contains("vfs.count = 2"),
            "expected {field:?} in: {e}"
        );
    }
    // Indexes inside the VFs, in any order and overlapping, are fine.
    Fixture::from_toml(&format!("{vfs}moved_to_pod = \"1,0-1\"\n"), "ok.toml").unwrap();
}

/// A fixture built (or changed) in code never went through the parser's checks: a two-digit class
/// made the writer panic slicing it, and a huge VF range allocated gigabytes. `write_tree` checks
/// it first and names the field.
#[test]
fn write_tree_checks_a_fixture_built_in_code() {
    let valid = Fixture::from_toml(
        &format!("{PF}[function.vfs]\ncount = 2\ndevice = \"1018\"\n"),
        "code",
    )
    .unwrap();
    let mut short_class = valid.clone();
    short_class.functions[0].class = "02".to_owned();
    let mut huge_range = valid.clone();
    if let Some(vfs) = huge_range.functions[0].vfs.as_mut() {
        vfs.moved_to_pod = Some("0-4000000000".to_owned());
    }
    for (fixture, field) in [
        (short_class, "function[0].class"),
        (huge_range, "function[0].vfs.moved_to_pod"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let e = write_tree(&fixture, dir.path()).unwrap_err();
        assert!(matches!(e, SimError::Invalid { .. }), "{field}: {e:?}");
        assert!(e.to_string().contains(field), "{field}: {e}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "{field}");
    }
    let dir = tempfile::tempdir().unwrap();
    write_tree(&valid, dir.path()).unwrap();
}
