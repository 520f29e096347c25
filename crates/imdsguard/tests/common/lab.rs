//! A lab (`imdsguard_lab`: pods in network namespaces, a node namespace, the IMDS stand-in
//! reachable only from them) that a root test brings up and that is taken down whatever happens.

use imdsguard_lab::lab::{self, LabState, UpOptions};
use imdsguard_lab::topology::Topology;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The lab, taken down on drop; [`Lab::down_and_check`] also checks that nothing is left.
pub struct Lab(Option<LabState>);

impl Lab {
    /// Brings up `topology` (lab.yaml's form) with the lab's routing mark, its state under
    /// `dir/lab`, named `prefix` with the process id and a counter (short: interface names).
    pub fn up(dir: &Path, prefix: &str, topology: &str) -> Lab {
        let t =
            imdsguard_lab::topology::parse(&imdsguard_manifest::Source::new("lab.yaml", topology))
                .unwrap_or_else(|e| panic!("{e}\n{topology}"));
        Lab::up_parsed(dir, prefix, &t, lab::LAB_MARK)
    }

    /// [`Lab::up`] for a topology already parsed, with its own routing mark.
    pub fn up_parsed(dir: &Path, prefix: &str, t: &Topology, mark: u32) -> Lab {
        static N: AtomicUsize = AtomicUsize::new(0);
        let state = lab::up(
            t,
            &UpOptions {
                interrupted: Default::default(),
                name: format!(
                    "{prefix}{}x{}",
                    std::process::id() % 100_000,
                    N.fetch_add(1, Ordering::Relaxed)
                ),
                state_root: dir.join("lab"),
                binary: PathBuf::from(env!("CARGO_BIN_EXE_imdsguard")),
                mark,
            },
            &|step| eprintln!("lab: {step}"),
        )
        .expect("lab up");
        Lab(Some(state))
    }

    pub fn state(&self) -> &LabState {
        self.0.as_ref().expect("the lab is up")
    }

    /// curl in a lab pod, with `Metadata: true`: the HTTP status, 0 when no answer came within
    /// 2 s (dropped).
    pub fn http_status(&self, pod: &str, url: &str) -> u16 {
        let argv: Vec<String> = [
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "--max-time",
            "2",
            "-w",
            "%{http_code}",
            "-H",
            "Metadata: true",
            url,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let out = lab::exec(self.state(), pod, &argv)
            .expect("exec in the lab")
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0)
    }

    /// Takes the lab down and checks that nothing of it is left: namespaces, interfaces, ip
    /// rules into its table, its cgroups.
    pub fn down_and_check(mut self) {
        let state = self.0.take().expect("the lab is up");
        let problems = lab::down(&state);
        assert_eq!(problems, Vec::<String>::new());
        let netns: Vec<String> = state
            .pods
            .iter()
            .chain(&state.imds)
            .chain(&state.node)
            .map(|p| p.netns.clone())
            .collect();
        for n in &netns {
            assert!(!Path::new("/run/netns").join(n).exists(), "netns {n} left");
            assert!(
                !Path::new("/sys/class/net").join(n).exists(),
                "link {n} left"
            );
        }
        let rules = imdsguard_netns::run("ip", &["rule", "show"]).unwrap_or_default();
        assert!(
            !rules.contains(&format!("lookup {} ", state.table))
                && !rules.contains(&format!("lookup {}\n", state.table)),
            "{rules}"
        );
        if let Some(root) = &state.cgroup_root {
            assert!(!root.exists(), "cgroup {} left", root.display());
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(state) = self.0.take() {
            for p in lab::down(&state) {
                eprintln!("lab down: {p}");
            }
        }
    }
}
