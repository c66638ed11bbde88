//! `vltava user scram set|list|delete`: SCRAM credentials, as Kafka's `kafka-configs.sh
//! --entity-type users --alter --add-config 'SCRAM-SHA-256=[password=...]'` makes them,
//! through AlterUserScramCredentials and DescribeUserScramCredentials (KIP-554). The password
//! is salted and hashed here: only the salted password crosses the wire.

use std::io::BufRead;

use vltava_sasl::scram::{self, ScramMechanism};

use clap::{Args, Subcommand};
use serde::Serialize;
use vltava_protocol::messages::alter_user_scram_credentials_request::{
    ScramCredentialDeletion, ScramCredentialUpsertion,
};
use vltava_protocol::messages::describe_user_scram_credentials_request::UserName;
use vltava_protocol::messages::*;
use vltava_protocol::{ApiKey, StrBytes};

use crate::client::{ClientArgs, Output, Settings};
use crate::output::{print, print_json};
use crate::raw;
use crate::table::Table;
use crate::Error;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  vltava user scram set alice --password-stdin < password.txt
  vltava user scram set alice --mechanism SCRAM-SHA-512 --iterations 8192 --password secret
  vltava user scram list
  vltava user scram delete alice --mechanism SCRAM-SHA-256")]
pub struct UserArgs {
    #[command(subcommand)]
    pub command: UserCommand,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// SCRAM credentials (SCRAM-SHA-256, SCRAM-SHA-512)
    #[command(subcommand)]
    Scram(ScramCommand),
}

#[derive(Debug, Subcommand)]
pub enum ScramCommand {
    /// Create or replace a user's credential for one mechanism
    #[command(after_help = "Examples:
  vltava user scram set alice --password-stdin < password.txt
  vltava user scram set alice --mechanism SCRAM-SHA-512 --password secret")]
    Set {
        /// User name
        user: String,
        /// SCRAM-SHA-256 or SCRAM-SHA-512
        #[arg(long, default_value = "SCRAM-SHA-256")]
        mechanism: String,
        /// The password (visible in the process list; prefer --password-stdin)
        #[arg(long, conflicts_with = "password_stdin")]
        password: Option<String>,
        /// Read the password from the first line of stdin
        #[arg(long)]
        password_stdin: bool,
        /// PBKDF2 iterations (Kafka accepts 4096 to 16384)
        #[arg(long, default_value_t = 4096)]
        iterations: u32,
    },
    /// List users and the mechanisms they have credentials for [default: every user]
    #[command(after_help = "Examples:
  vltava user scram list
  vltava user scram list alice bob -o json")]
    List {
        /// Only these users
        users: Vec<String>,
    },
    /// Delete a user's credential for one mechanism
    #[command(after_help = "Examples:
  vltava user scram delete alice --mechanism SCRAM-SHA-256")]
    Delete {
        user: String,
        #[arg(long, default_value = "SCRAM-SHA-256")]
        mechanism: String,
    },
}

fn mechanism(name: &str) -> Result<ScramMechanism, Error> {
    ScramMechanism::from_name(&name.to_ascii_uppercase()).ok_or_else(|| {
        Error::Usage(format!(
            "--mechanism: expected SCRAM-SHA-256 or SCRAM-SHA-512, not '{name}'"
        ))
    })
}

fn mechanism_name(code: i8) -> String {
    ScramMechanism::from_wire(code).map_or_else(|| format!("UNKNOWN({code})"), |m| m.name().into())
}

fn refused(user: &str, code: i16, message: Option<&StrBytes>) -> Error {
    raw::refusal(format!("user '{user}'"), code, message)
}

#[derive(Debug, Serialize)]
struct CredentialJson {
    user: String,
    mechanism: String,
    iterations: i32,
}

pub fn run(args: UserArgs) -> Result<(), Error> {
    let settings = Settings::new(&args.client, &[])?;
    let UserCommand::Scram(command) = args.command;
    match command {
        ScramCommand::Set {
            user,
            mechanism: m,
            password,
            password_stdin,
            iterations,
        } => {
            let m = mechanism(&m)?;
            let password = match (password, password_stdin) {
                (Some(p), _) => p,
                (None, true) => {
                    let mut line = String::new();
                    std::io::stdin().lock().read_line(&mut line)?;
                    line.trim_end_matches(['\r', '\n']).to_string()
                }
                (None, false) => {
                    return Err(Error::Usage("give --password or --password-stdin".into()))
                }
            };
            if password.is_empty() {
                return Err(Error::Usage("the password is empty".into()));
            }
            if iterations == 0 {
                return Err(Error::Usage("--iterations must be positive".into()));
            }
            let salt = scram::salt();
            let salted = scram::salted_password(m, &password, &salt, iterations);
            let req = AlterUserScramCredentialsRequest::default().with_upsertions(vec![
                ScramCredentialUpsertion::default()
                    .with_name(StrBytes::from_string(user.clone()))
                    .with_mechanism(m.wire())
                    .with_iterations(i32::try_from(iterations).unwrap_or(i32::MAX))
                    .with_salt(salt.into())
                    .with_salted_password(salted.into()),
            ]);
            alter(&settings, &user, req)
        }
        ScramCommand::Delete { user, mechanism: m } => {
            let code = mechanism(&m)?.wire();
            let req = AlterUserScramCredentialsRequest::default().with_deletions(vec![
                ScramCredentialDeletion::default()
                    .with_name(StrBytes::from_string(user.clone()))
                    .with_mechanism(code),
            ]);
            alter(&settings, &user, req)
        }
        ScramCommand::List { users } => list(&settings, users),
    }
}

fn alter(
    settings: &Settings,
    user: &str,
    req: AlterUserScramCredentialsRequest,
) -> Result<(), Error> {
    let mut conn = raw::bootstrap(settings)?;
    let resp: AlterUserScramCredentialsResponse =
        conn.call(ApiKey::AlterUserScramCredentials, 0, &req)?;
    for r in &resp.results {
        if r.error_code != 0 {
            return Err(refused(user, r.error_code, r.error_message.as_ref()));
        }
    }
    if settings.verbose {
        eprintln!("user '{user}' changed");
    }
    Ok(())
}

fn list(settings: &Settings, users: Vec<String>) -> Result<(), Error> {
    let mut conn = raw::bootstrap(settings)?;
    let filter = (!users.is_empty()).then(|| {
        users
            .iter()
            .map(|u| UserName::default().with_name(StrBytes::from_string(u.clone())))
            .collect()
    });
    let resp: DescribeUserScramCredentialsResponse = conn.call(
        ApiKey::DescribeUserScramCredentials,
        0,
        &DescribeUserScramCredentialsRequest::default().with_users(filter),
    )?;
    if resp.error_code != 0 {
        return Err(refused("*", resp.error_code, resp.error_message.as_ref()));
    }
    let mut rows = Vec::new();
    for r in &resp.results {
        if r.error_code != 0 {
            return Err(refused(&r.user, r.error_code, r.error_message.as_ref()));
        }
        for c in &r.credential_infos {
            rows.push(CredentialJson {
                user: r.user.to_string(),
                mechanism: mechanism_name(c.mechanism),
                iterations: c.iterations,
            });
        }
    }
    match settings.output {
        Output::Json => print_json(&rows),
        Output::Table => {
            let mut table = Table::new(&["USER", "MECHANISM", "ITERATIONS"]);
            for r in &rows {
                table.row([
                    r.user.clone(),
                    r.mechanism.clone(),
                    r.iterations.to_string(),
                ]);
            }
            print(&table.render())
        }
    }
}
