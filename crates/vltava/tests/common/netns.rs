//! Nodes on their own network addresses: one network namespace per node, joined by a bridge
//! the host also sits on. iptables inside a node's namespace can then cut it off from its
//! peers while clients on the host still reach it.

use std::process::Command;

pub struct NetLab {
    bridge: String,
    namespaces: Vec<String>,
    /// The third byte of this lab's 10.77.x.0/24.
    subnet: u32,
}

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl NetLab {
    /// Namespaces for nodes 1..=n, or why they cannot be made here (not root, no `ip` or
    /// `iptables`).
    pub fn new(n: usize) -> Result<Self, String> {
        let tag = std::process::id() % 100_000;
        let mut lab = NetLab {
            bridge: format!("vbr{tag}"),
            namespaces: Vec::new(),
            subnet: tag % 250,
        };
        run(&["iptables", "--version"])?;
        run(&["ip", "link", "add", &lab.bridge, "type", "bridge"])?;
        let host = format!("{}/24", lab.host_ip());
        run(&["ip", "addr", "add", &host, "dev", &lab.bridge])?;
        run(&["ip", "link", "set", &lab.bridge, "up"])?;
        for i in 1..=n {
            let ns = format!("vltava-{tag}-{i}");
            run(&["ip", "netns", "add", &ns])?;
            lab.namespaces.push(ns.clone());
            let (outside, inside) = (format!("vh{tag}x{i}"), format!("vp{tag}x{i}"));
            run(&[
                "ip", "link", "add", &outside, "type", "veth", "peer", "name", &inside,
            ])?;
            run(&["ip", "link", "set", &inside, "netns", &ns])?;
            run(&["ip", "link", "set", &outside, "master", &lab.bridge])?;
            run(&["ip", "link", "set", &outside, "up"])?;
            let addr = format!("{}/24", lab.ip(i));
            run(&[
                "ip", "netns", "exec", &ns, "ip", "addr", "add", &addr, "dev", &inside,
            ])?;
            run(&[
                "ip", "netns", "exec", &ns, "ip", "link", "set", &inside, "up",
            ])?;
            run(&["ip", "netns", "exec", &ns, "ip", "link", "set", "lo", "up"])?;
        }
        Ok(lab)
    }

    /// Node `i`'s namespace (1-based).
    pub fn ns(&self, i: usize) -> &str {
        &self.namespaces[i - 1]
    }

    /// Node `i`'s address.
    pub fn ip(&self, i: usize) -> String {
        format!("10.77.{}.{i}", self.subnet)
    }

    fn host_ip(&self) -> String {
        format!("10.77.{}.254", self.subnet)
    }

    /// Drops all traffic between node `i` and each of `peers`, both ways; the host still
    /// reaches it.
    pub fn isolate(&self, i: usize, peers: &[usize]) {
        for p in peers {
            let ip = self.ip(*p);
            for rule in [["INPUT", "-s"], ["OUTPUT", "-d"]] {
                let args = [
                    "ip",
                    "netns",
                    "exec",
                    self.ns(i),
                    "iptables",
                    "-A",
                    rule[0],
                    rule[1],
                    &ip,
                    "-j",
                    "DROP",
                ];
                run(&args).unwrap();
            }
        }
    }

    /// Removes every rule [`isolate`](Self::isolate) added to node `i`.
    pub fn heal(&self, i: usize) {
        for chain in ["INPUT", "OUTPUT"] {
            run(&["ip", "netns", "exec", self.ns(i), "iptables", "-F", chain]).unwrap();
        }
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth, and with it the host's end.
        for ns in &self.namespaces {
            let _ = run(&["ip", "netns", "del", ns]);
        }
        let _ = run(&["ip", "link", "del", &self.bridge]);
    }
}
