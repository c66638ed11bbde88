//! `vltava schema`: subjects and schemas in a schema registry (ours or Confluent's), over its
//! REST API.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::{json, Value};
use vltava_registry::http_client::path_segment;

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  vltava schema register orders-value --schema-file order.avsc
  vltava schema register payments-value --type protobuf --schema-file payment.proto
  vltava schema list
  vltava schema list orders-value
  vltava schema get orders-value --version latest
  vltava schema get --id 3
  vltava schema check orders-value --schema-file order-v2.avsc
  vltava schema delete orders-value --version 1
  vltava schema delete orders-value --permanent

Answers are the registry's JSON. Exit codes: 0 done (and compatible, for check),
1 refused or failed (the registry's error on stderr; check: incompatible), 2 bad usage.")]
pub struct SchemaArgs {
    /// The registry
    #[arg(
        long,
        env = "VLTAVA_REGISTRY_URL",
        default_value = "http://127.0.0.1:8081",
        global = true
    )]
    registry_url: String,
    #[command(subcommand)]
    command: SchemaCommand,
}

#[derive(Args, Debug)]
struct SchemaText {
    /// The schema text
    #[arg(
        long,
        conflicts_with = "schema_file",
        required_unless_present = "schema_file"
    )]
    schema: Option<String>,
    /// A file holding the schema
    #[arg(long, value_name = "FILE")]
    schema_file: Option<PathBuf>,
    /// The schema's format
    #[arg(long = "type", value_enum, default_value_t = Format::Avro)]
    format: Format,
    /// A reference to another subject's schema: NAME=SUBJECT:VERSION (repeatable)
    #[arg(long = "reference", value_name = "NAME=SUBJECT:VERSION")]
    references: Vec<String>,
    /// Normalize the schema first
    #[arg(long)]
    normalize: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Format {
    Avro,
    Json,
    Protobuf,
}

#[derive(Subcommand, Debug)]
enum SchemaCommand {
    /// Register a schema under a subject; prints its id
    #[command(after_help = "Examples:
  vltava schema register orders-value --schema-file order.avsc
  vltava schema register items-value --type json --schema '{\"type\": \"object\"}'
  vltava schema register customer-value --schema-file customer.avsc --reference Address=address-value:1")]
    Register {
        subject: String,
        #[command(flatten)]
        text: SchemaText,
    },
    /// List subjects, or a subject's versions
    #[command(after_help = "Examples:
  vltava schema list
  vltava schema list --prefix orders
  vltava schema list orders-value --deleted")]
    List {
        subject: Option<String>,
        /// Include soft-deleted subjects or versions
        #[arg(long)]
        deleted: bool,
        /// Only subjects starting with this
        #[arg(long)]
        prefix: Option<String>,
    },
    /// Show a subject's version, or a schema by id
    #[command(disable_version_flag = true)]
    #[command(after_help = "Examples:
  vltava schema get orders-value
  vltava schema get orders-value --version 2
  vltava schema get --id 3")]
    Get {
        #[arg(required_unless_present = "id", conflicts_with = "id")]
        subject: Option<String>,
        /// Version number or latest
        #[arg(long, default_value = "latest")]
        version: String,
        /// A schema's global id
        #[arg(long)]
        id: Option<i32>,
    },
    /// Check a schema against a subject's compatibility level
    #[command(disable_version_flag = true)]
    #[command(after_help = "Examples:
  vltava schema check orders-value --schema-file order-v2.avsc
  vltava schema check orders-value --schema-file order-v2.avsc --version 1")]
    Check {
        subject: String,
        #[command(flatten)]
        text: SchemaText,
        /// Check only against this version (default: what the level names)
        #[arg(long)]
        version: Option<String>,
    },
    /// Delete a subject or one version (soft; --permanent after a soft delete)
    #[command(disable_version_flag = true)]
    #[command(after_help = "Examples:
  vltava schema delete orders-value --version 1
  vltava schema delete orders-value
  vltava schema delete orders-value --permanent")]
    Delete {
        subject: String,
        #[arg(long)]
        version: Option<String>,
        #[arg(long)]
        permanent: bool,
    },
}

fn body(text: &SchemaText) -> anyhow::Result<Value> {
    let schema = match (&text.schema, &text.schema_file) {
        (Some(s), _) => s.clone(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?,
        (None, None) => anyhow::bail!("--schema or --schema-file is required"),
    };
    let mut references = Vec::new();
    for r in &text.references {
        let parsed = r.split_once('=').and_then(|(name, rest)| {
            let (subject, version) = rest.rsplit_once(':')?;
            Some((name, subject, version.parse::<i32>().ok()?))
        });
        let Some((name, subject, version)) = parsed else {
            anyhow::bail!("--reference {r:?}: expected NAME=SUBJECT:VERSION");
        };
        references.push(json!({"name": name, "subject": subject, "version": version}));
    }
    let mut body = json!({ "schema": schema, "references": references });
    match text.format {
        Format::Avro => {}
        Format::Json => body["schemaType"] = json!("JSON"),
        Format::Protobuf => body["schemaType"] = json!("PROTOBUF"),
    }
    Ok(body)
}

/// Exit code 1 with the registry's error, or the answer's JSON.
async fn call(base: &str, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
    let bytes = body.map(|b| b.to_string()).unwrap_or_default();
    let answer = vltava_registry::http_client::request(
        base,
        method,
        path,
        body.map(|_| "application/vnd.schemaregistry.v1+json"),
        bytes.as_bytes(),
        Duration::from_secs(30),
    )
    .await
    .map_err(|e| match e {
        vltava_registry::RegistryError::ForwardingFailed { reason } => reason,
        other => other.to_string(),
    })?;
    let value: Value = serde_json::from_slice(&answer.body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&answer.body).into_owned()));
    if answer.status >= 300 {
        let message = value["message"].as_str().unwrap_or("").to_string();
        return Err(format!(
            "{message} (HTTP {}, error_code {})",
            answer.status, value["error_code"]
        ));
    }
    Ok(value)
}

pub fn run(args: SchemaArgs) -> i32 {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vltava schema: {e}");
            return 1;
        }
    };
    match runtime.block_on(execute(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vltava schema: {e}");
            1
        }
    }
}

async fn execute(args: SchemaArgs) -> anyhow::Result<i32> {
    let base = args.registry_url.trim_end_matches('/').to_string();
    let (method, path, request, is_check) = match &args.command {
        SchemaCommand::Register { subject, text } => (
            "POST",
            format!(
                "/subjects/{}/versions?normalize={}",
                path_segment(subject),
                text.normalize
            ),
            Some(body(text)?),
            false,
        ),
        SchemaCommand::List {
            subject: Some(s),
            deleted,
            ..
        } => (
            "GET",
            format!("/subjects/{}/versions?deleted={deleted}", path_segment(s)),
            None,
            false,
        ),
        SchemaCommand::List {
            subject: None,
            deleted,
            prefix,
        } => (
            "GET",
            format!(
                "/subjects?deleted={deleted}&subjectPrefix={}",
                path_segment(prefix.as_deref().unwrap_or(""))
            ),
            None,
            false,
        ),
        SchemaCommand::Get { id: Some(id), .. } => {
            ("GET", format!("/schemas/ids/{id}"), None, false)
        }
        SchemaCommand::Get {
            subject: Some(s),
            version,
            ..
        } => (
            "GET",
            format!(
                "/subjects/{}/versions/{}",
                path_segment(s),
                path_segment(version)
            ),
            None,
            false,
        ),
        SchemaCommand::Get { .. } => anyhow::bail!("a subject or --id is required"),
        SchemaCommand::Check {
            subject,
            text,
            version,
        } => {
            let versions = match version {
                Some(v) => format!("versions/{}", path_segment(v)),
                None => "versions".to_string(),
            };
            (
                "POST",
                format!(
                    "/compatibility/subjects/{}/{versions}?verbose=true&normalize={}",
                    path_segment(subject),
                    text.normalize
                ),
                Some(body(text)?),
                true,
            )
        }
        SchemaCommand::Delete {
            subject,
            version,
            permanent,
        } => {
            let path = match version {
                Some(v) => format!(
                    "/subjects/{}/versions/{}",
                    path_segment(subject),
                    path_segment(v)
                ),
                None => format!("/subjects/{}", path_segment(subject)),
            };
            (
                "DELETE",
                format!("{path}?permanent={permanent}"),
                None,
                false,
            )
        }
    };
    match call(&base, method, &path, request.as_ref()).await {
        Ok(answer) => {
            println!("{answer}");
            if is_check && answer["is_compatible"] != json!(true) {
                return Ok(1);
            }
            Ok(0)
        }
        Err(message) => {
            eprintln!("vltava schema: {message}");
            Ok(1)
        }
    }
}
