//! `skyhouse repo ls|verify`: read a repository CAR offline.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use skyhouse_atproto::car::CarOptions;
use skyhouse_atproto::cbor;
use skyhouse_atproto::crypto::{DidDocument, PublicKey};
use skyhouse_atproto::repo::Repo;

use crate::Usage;

#[derive(Debug, Subcommand)]
pub enum RepoCommand {
    /// Print every record as a JSON line `{"collection","rkey","cid","record"}`
    /// (record in atproto lex-JSON), in key order.
    Ls(LsArgs),
    /// Check the commit signature and every block hash; exit 0 if valid, 1 if not.
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
pub struct CarArgs {
    /// The CAR file, or `-` for standard input.
    #[arg(value_name = "FILE.car")]
    file: PathBuf,
    /// Largest accepted block, in bytes (records are at most 1 MiB).
    #[arg(long, default_value_t = skyhouse_atproto::car::DEFAULT_MAX_BLOCK)]
    max_block: usize,
    /// Largest accepted CAR, in bytes (0: no cap).
    #[arg(long, default_value_t = 0)]
    max_size: u64,
    /// Block bytes held in memory before spilling to a temporary file, in MiB.
    #[arg(long, default_value_t = 256)]
    memory_mib: usize,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    #[command(flatten)]
    car: CarArgs,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("signer").required(true).args(["did_doc", "key"])))]
pub struct VerifyArgs {
    #[command(flatten)]
    car: CarArgs,
    /// The account's DID document (JSON file); its `#atproto` key is used.
    #[arg(long, value_name = "FILE")]
    did_doc: Option<PathBuf>,
    /// The account's signing key as a `did:key:…`.
    #[arg(long, value_name = "did:key:…")]
    key: Option<String>,
}

pub fn run(cmd: RepoCommand) -> Result<ExitCode> {
    match cmd {
        RepoCommand::Ls(args) => ls(args),
        RepoCommand::Verify(args) => verify(args),
    }
}

/// The CAR's bytes and how to read them. A file that cannot be opened is the
/// command line's error (exit status 2).
fn input(args: &CarArgs) -> Result<(Box<dyn Read>, CarOptions)> {
    let opts = CarOptions {
        max_block: args.max_block,
        max_total: if args.max_size == 0 {
            u64::MAX
        } else {
            args.max_size
        },
        memory_cap: args.memory_mib.saturating_mul(1 << 20),
        verify_hashes: true,
        size_hint: None,
    };
    let name = args.file.display().to_string();
    let mut opts = opts;
    let reader: Box<dyn Read> = if name == "-" {
        Box::new(io::stdin().lock())
    } else {
        let file = File::open(&args.file)
            .with_context(|| format!("open {name}"))
            .usage()?;
        opts.size_hint = file.metadata().ok().map(|m| m.len());
        Box::new(file)
    };
    Ok((reader, opts))
}

/// Read the repository from `input` (`name` for errors).
fn read((reader, opts): (Box<dyn Read>, CarOptions), name: &str) -> Result<Repo> {
    Repo::read(BufReader::with_capacity(1 << 16, reader), opts).with_context(|| name.to_owned())
}

fn ls(args: LsArgs) -> Result<ExitCode> {
    let name = args.car.file.display().to_string();
    let repo = read(input(&args.car)?, &name)?;
    let mut out = BufWriter::with_capacity(1 << 16, io::stdout().lock());
    let walked = repo.walk(|r| -> Result<()> {
        let Some(data) = r.data else {
            bail!(
                "record {}/{}: block {} missing from the CAR",
                r.collection,
                r.rkey,
                r.cid
            )
        };
        let record = cbor::decode(data)
            .with_context(|| format!("record {}/{} ({})", r.collection, r.rkey, r.cid))?;
        let line = LsLine {
            collection: r.collection,
            rkey: r.rkey,
            cid: r.cid.to_string(),
            record: &record,
        };
        serde_json::to_writer(&mut out, &line)?;
        out.write_all(b"\n")?;
        Ok(())
    });
    match walked {
        Ok(_) => {}
        // A closed pipe (`| head`) is not an error.
        Err(skyhouse_atproto::mst::WalkError::Visitor(
            skyhouse_atproto::repo::RepoOrVisitor::Visitor(e),
        )) if e
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe) =>
        {
            return Ok(ExitCode::SUCCESS)
        }
        Err(e) => bail!("{name}: {e}"),
    }
    match out.flush() {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(ExitCode::SUCCESS),
    }
}

#[derive(serde::Serialize)]
struct LsLine<'a> {
    collection: &'a str,
    rkey: &'a str,
    cid: String,
    record: &'a cbor::Value<'a>,
}

/// The signing key to check against, and the DID its document is for.
fn key_source(args: &VerifyArgs) -> Result<(PublicKey, Option<String>)> {
    Ok(match (&args.key, &args.did_doc) {
        (Some(k), _) => (PublicKey::from_did_key(k).with_context(|| "--key")?, None),
        (None, Some(path)) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("--did-doc {}", path.display()))?;
            let doc = DidDocument::from_json(&bytes)
                .with_context(|| format!("--did-doc {}", path.display()))?;
            let key = doc
                .signing_key()
                .with_context(|| format!("--did-doc {}", path.display()))?;
            (key, Some(doc.id.clone()))
        }
        (None, None) => bail!("one of --key or --did-doc is required"),
    })
}

fn verify(args: VerifyArgs) -> Result<ExitCode> {
    let name = args.car.file.display().to_string();
    // Validate the key source before reading the CAR: a bad one is the
    // command line's error (exit status 2), as is a CAR that cannot be opened.
    let (key, doc_did) = key_source(&args).usage()?;
    let input = input(&args.car)?;
    let outcome = (|| -> Result<String> {
        let repo = read(input, &name)?;
        if let Some(did) = &doc_did {
            if did != &repo.commit.did {
                bail!(
                    "DID document is for {did}, but the commit is by {}",
                    repo.commit.did
                );
            }
        }
        repo.commit.verify(&key).with_context(|| name.clone())?;
        let mut missing = None;
        let stats = repo
            .walk(|r| {
                // Block hashes were checked on reading; what is left is
                // whether every record the tree names is present.
                if r.data.is_none() && missing.is_none() {
                    missing = Some(format!("{}/{} ({})", r.collection, r.rkey, r.cid));
                }
                Ok::<_, std::convert::Infallible>(())
            })
            .with_context(|| name.clone())?;
        if let Some(m) = missing {
            bail!("{name}: record block missing for {m}");
        }
        Ok(format!(
            "ok: {name}: commit {} by {} rev {} signed; {} records, {} MST nodes, {} blocks hash-checked",
            repo.commit_cid,
            repo.commit.did,
            repo.commit.rev.as_deref().unwrap_or("-"),
            stats.entries,
            stats.nodes,
            repo.blocks.len()
        ))
    })();
    match outcome {
        Ok(msg) => {
            println!("{msg}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("invalid: {e:#}");
            Ok(ExitCode::FAILURE)
        }
    }
}
