//! `vltava dev cluster`: a local cluster of `vltava broker` processes in combined mode,
//! for trying replication and failover on one machine. Not for production: every node is on
//! 127.0.0.1 and its data lives under one directory.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub struct DevArgs {
    #[command(subcommand)]
    command: DevCommand,
}

#[derive(Debug, Subcommand)]
enum DevCommand {
    /// Run a local cluster of N nodes, each a broker and a metadata-quorum voter, until
    /// Ctrl-C
    #[command(after_help = "Examples:
  vltava dev cluster
  vltava dev cluster --nodes 5 --base-port 29092
  vltava topic create orders --partitions 6 --replication-factor 3 -b 127.0.0.1:19092

Node i listens for clients on base-port + i - 1, for the quorum on base-port + 100 + i - 1,
and serves its metrics on http://127.0.0.1:(base-port + 200 + i - 1)/metrics (unless
--override metrics.listeners=... says otherwise); its data is in <data-dir>/node-i and its log in <data-dir>/node-i.log. A restart with the
same options resumes the same cluster. Stop one node with `kill -9` to watch failover.")]
    Cluster(ClusterArgs),
}

#[derive(Debug, Args)]
struct ClusterArgs {
    /// How many nodes (1 to 9)
    #[arg(long, default_value_t = 3)]
    nodes: u16,
    /// Client port of node 1
    #[arg(long, default_value_t = 19092)]
    base_port: u16,
    /// Where the nodes keep their data and logs
    #[arg(long, value_name = "DIR", default_value = "vltava-dev-cluster")]
    data_dir: PathBuf,
    /// Set a broker config on every node: --override default.replication.factor=3
    #[arg(long = "override", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
}

pub fn run(args: DevArgs) -> anyhow::Result<()> {
    let DevCommand::Cluster(args) = args.command;
    if !(1..=9).contains(&args.nodes) {
        bail!("--nodes must be between 1 and 9");
    }
    if u32::from(args.base_port) + 200 + u32::from(args.nodes) > 65535 {
        bail!(
            "--base-port {} leaves no room for the nodes' ports",
            args.base_port
        );
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let exe = std::env::current_exe().context("finding the vltava executable")?;
    let client_port = |i: u16| args.base_port + i - 1;
    let quorum_port = |i: u16| args.base_port + 100 + i - 1;
    let metrics_port = |i: u16| args.base_port + 200 + i - 1;
    // The user's own metrics.listeners replaces ours (an empty one turns metrics off).
    let own_metrics = !args
        .overrides
        .iter()
        .any(|o| o.trim_start().starts_with("metrics.listeners="));
    let voters = (1..=args.nodes)
        .map(|i| format!("{i}@127.0.0.1:{}", quorum_port(i)))
        .collect::<Vec<_>>()
        .join(",");
    let mut children = Children(Vec::new());
    for i in 1..=args.nodes {
        let log_path = args.data_dir.join(format!("node-{i}.log"));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let mut cmd = Command::new(&exe);
        cmd.args(["broker", "--node-id", &i.to_string(), "--data-dir"])
            .arg(args.data_dir.join(format!("node-{i}")))
            .arg("--listeners")
            .arg(format!(
                "PLAINTEXT://127.0.0.1:{},CONTROLLER://127.0.0.1:{}",
                client_port(i),
                quorum_port(i)
            ))
            .args(["--override", &format!("controller.quorum.voters={voters}")])
            .args(["--override", "controller.listener.names=CONTROLLER"])
            .args([
                "--override",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            ]);
        if own_metrics {
            cmd.args([
                "--override",
                &format!("metrics.listeners=http://127.0.0.1:{}", metrics_port(i)),
            ]);
        }
        for o in &args.overrides {
            cmd.args(["--override", o]);
        }
        let child = cmd
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting node {i}"))?;
        children.0.push((i, child, log_path));
    }
    eprintln!(
        "Starting {} nodes (they elect a quorum leader, then serve)...",
        args.nodes
    );
    for (i, child, log_path) in &mut children.0 {
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        stdout.read_line(&mut line).ok();
        let Some(addr) = line.trim().strip_prefix("vltava: listening on ") else {
            bail!(
                "node {i} did not start; its log is {} (a port in use? try --base-port)",
                log_path.display()
            );
        };
        // The broker announces its metrics endpoint after its listeners, once it serves it.
        let mut metrics = None;
        while own_metrics && metrics.is_none() {
            let mut line = String::new();
            if stdout.read_line(&mut line).unwrap_or(0) == 0 {
                bail!(
                    "node {i} stopped while starting; its log is {} (a port in use? try --base-port)",
                    log_path.display()
                );
            }
            metrics = line
                .trim()
                .strip_prefix("vltava: metrics on ")
                .map(str::to_string);
        }
        match metrics {
            Some(url) => eprintln!("  node {i} ready on {addr}, metrics on {url}"),
            None => eprintln!("  node {i} ready on {addr}"),
        }
    }
    let bootstrap = (1..=args.nodes)
        .map(|i| format!("127.0.0.1:{}", client_port(i)))
        .collect::<Vec<_>>()
        .join(",");
    println!("{bootstrap}");
    eprintln!(
        "Cluster of {} nodes is up. Bootstrap servers (printed on stdout): {bootstrap}\nLogs and data in {}. Ctrl-C stops every node.",
        args.nodes,
        args.data_dir.display()
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let exited = rt.block_on(async {
        let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            () = crate::broker_cmd::wait_for_signal(term) => Ok::<_, std::io::Error>(None),
            i = watch_children(&mut children) => Ok(Some(i)),
        }
    })?;
    if let Some(i) = exited {
        eprintln!("node {i} exited; stopping the others");
    } else {
        eprintln!("stopping every node...");
    }
    children.terminate();
    Ok(())
}

/// Resolves with the first node that exits on its own.
async fn watch_children(children: &mut Children) -> u16 {
    loop {
        for (i, child, _) in &mut children.0 {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return *i;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The nodes, stopped (SIGTERM, then SIGKILL after 30 s) when dropped.
struct Children(Vec<(u16, Child, PathBuf)>);

impl Children {
    fn terminate(&mut self) {
        for (_, child, _) in &self.0 {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        for (i, child, _) in &mut self.0 {
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if std::time::Instant::now() > deadline => {
                        eprintln!("node {i} did not stop in time; killing it");
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        }
        self.0.clear();
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        self.terminate();
    }
}
