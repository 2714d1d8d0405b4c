//! `tlsrpt token new`: a bearer token for the SQL services, and its entry for the
//! `--sql-tokens` file.

use std::process::ExitCode;

/// Bearer tokens for the SQL services (`POST /v1/sql` and Flight SQL).
///
/// A service given --sql-tokens FILE admits only the tokens in FILE, each as its SHA-256
/// digest: the file holds nothing a client could use. A token can be limited to some policy
/// domains: it then sees only their rows, in every table and view.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Make a new random token. The entry for the tokens file goes to standard output
    /// (append it: `tlsrpt token new --name analysts >> sql-tokens.toml`); the token
    /// itself to standard error, once: give it to the client, it is kept nowhere.
    New(NewArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct NewArgs {
    /// What the token is for, shown in logs (e.g. `analysts`, `customer-acme`).
    #[arg(long)]
    name: String,

    /// A policy domain the token may see; repeat for more. Without it, every domain.
    #[arg(long = "domain", value_name = "DOMAIN")]
    domains: Vec<String>,
}

pub(crate) fn run(command: &Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::New(args) => new(args),
    }
}

fn new(args: &NewArgs) -> anyhow::Result<ExitCode> {
    let name = args.name.trim();
    if name.is_empty() || name.contains(['"', '\\', '\n']) {
        anyhow::bail!("--name: give a short plain name, such as analysts or customer-acme");
    }
    let domains = args
        .domains
        .iter()
        .map(|domain| {
            tlsrpt_query::access::normalized_domain(domain)
                .ok_or_else(|| anyhow::anyhow!("--domain {domain:?} is not a domain name"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (token, digest) = tlsrpt_query::access::new_token();
    let mut entry = format!("\n[[token]]\nname = \"{name}\"\nsha256 = \"{digest}\"\n");
    if !domains.is_empty() {
        let list: Vec<String> = domains.iter().map(|d| format!("\"{d}\"")).collect();
        entry.push_str(&format!("domains = [{}]\n", list.join(", ")));
    }
    print!("{entry}");
    eprintln!(
        "The token for {name:?} (shown once, kept nowhere; the entry on standard output \
         holds only its digest):\n{token}\nClients send it as `Authorization: Bearer {token}` \
         (Flight SQL: the same header, or any user name with the token as password)."
    );
    Ok(ExitCode::SUCCESS)
}
