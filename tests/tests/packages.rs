//! The Debian packages that `deploy/packages/build.sh` makes (from the dev build here: what is
//! tested is the packaging), installed with `dpkg -i` on a fresh Debian host with systemd as its
//! init, and removed and purged with `dpkg -r` and `dpkg -P`: each step succeeds, and each leaves
//! what it should — the `nexus` user and the state directories owned right, the units installed
//! but neither enabled nor started, conffiles under /etc/nexus, man pages and completions, the
//! binaries working; after removal the configuration (and the units masked), after purging no
//! configuration and no unit (the state directories and the user stay, as Debian keeps them).

use nexus_tests::systemd::{SystemdHost, build_packages, deploy_dir};

const PACKAGES: [&str; 3] = ["nexus-coordinator", "nexus-agent", "nexus"];

#[test]
fn the_packages_install_and_remove_cleanly() {
    let debs = tempfile::tempdir().unwrap();
    build_packages(debs.path(), 1);
    let mount = format!("{}:/debs:ro", debs.path().display());
    let host = SystemdHost::start(
        &format!("nexus-packages-{}", std::process::id()),
        &["-v", &mount],
    );

    let installed = host.ok(&["sh", "-c", "dpkg -i /debs/*.deb 2>&1"]);
    assert!(!installed.contains("warning"), "{installed}");
    for package in PACKAGES {
        let status = host.ok(&["dpkg-query", "-W", "-f=${Status}", package]);
        assert_eq!(status, "install ok installed", "{package}");
    }
    // The coordinator's user, and each daemon's state directory, owned right, made at install.
    assert!(host.ok(&["id", "nexus"]).contains("(nexus)"));
    assert_eq!(
        host.ok(&["stat", "-c", "%U %a", "/var/lib/nexus/coordinator"])
            .trim(),
        "nexus 700"
    );
    assert_eq!(
        host.ok(&["stat", "-c", "%U %a", "/var/lib/nexus/agent"])
            .trim(),
        "root 700"
    );
    // Installed, neither enabled nor started: they need their configuration and PKI first.
    for unit in ["nexus-coordinator", "nexus-agent"] {
        assert_eq!(host.property(unit, "LoadState"), "loaded", "{unit}");
        assert_eq!(host.property(unit, "UnitFileState"), "disabled", "{unit}");
        assert_eq!(host.property(unit, "ActiveState"), "inactive", "{unit}");
    }
    // The example configurations are conffiles; the programs run and have their pages.
    let conffiles = host.ok(&[
        "dpkg-query",
        "-W",
        "-f=${Conffiles}\n",
        "nexus-coordinator",
        "nexus-agent",
    ]);
    for file in ["/etc/nexus/coordinator.toml", "/etc/nexus/agent.toml"] {
        assert!(conffiles.contains(file), "{conffiles}");
    }
    for program in PACKAGES {
        assert!(
            host.ok(&[program, "--version"]).contains("0.1.0"),
            "{program}"
        );
    }
    for file in [
        "/usr/share/man/man1/nexus-coordinator.1",
        "/usr/share/man/man1/nexus-agent.1",
        "/usr/share/man/man1/nexus.1",
        "/usr/share/man/man1/nexus-workspace-create.1",
        "/usr/share/bash-completion/completions/nexus",
        "/usr/lib/sysusers.d/nexus-coordinator.conf",
        "/usr/lib/sysctl.d/60-nexus-coordinator.conf",
    ] {
        host.ok(&["test", "-s", file]);
    }
    // The installed units are the repository's.
    let unit = host.ok(&["cat", "/usr/lib/systemd/system/nexus-coordinator.service"]);
    assert_eq!(
        unit,
        std::fs::read_to_string(deploy_dir().join("systemd/nexus-coordinator.service")).unwrap()
    );

    // Removed: the programs and units go, the configuration stays; purged: it goes too.
    host.ok(&["dpkg", "-r", "nexus", "nexus-agent", "nexus-coordinator"]);
    for program in PACKAGES {
        assert!(
            !host
                .exec(&["test", "-e", &format!("/usr/bin/{program}")])
                .status
                .success()
        );
    }
    // Removed but not purged, a unit stays masked (debhelper's way): what is left of its
    // configuration cannot start it.
    assert_eq!(host.property("nexus-coordinator", "LoadState"), "masked");
    host.ok(&["test", "-f", "/etc/nexus/coordinator.toml"]);
    host.ok(&["dpkg", "-P", "nexus", "nexus-agent", "nexus-coordinator"]);
    assert_eq!(host.property("nexus-coordinator", "LoadState"), "not-found");
    assert!(
        !host
            .exec(&["test", "-e", "/etc/nexus/coordinator.toml"])
            .status
            .success()
    );
    let left = host.ok(&["sh", "-c", "dpkg -l 'nexus*' 2>&1 || true"]);
    assert!(!left.contains("ii "), "{left}");
}
