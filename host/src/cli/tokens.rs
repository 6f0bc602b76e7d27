//! `weir token`: create, list and revoke access tokens.

use anyhow::bail;
use clap::Subcommand;
use weir_client::admin::{AdminRequest, AdminResponse, Role, TokenInfo};

use super::ConnectArgs;

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a token and print its secret (shown only once).
    Create {
        #[arg(long)]
        name: String,
        /// Roles, comma-separated: produce, consume, admin.
        #[arg(long, value_delimiter = ',', required = true, value_parser = parse_role)]
        role: Vec<Role>,
        /// Streams the roles apply to, comma-separated [default: all].
        #[arg(long, value_delimiter = ',')]
        streams: Option<Vec<String>>,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// List tokens: names, roles, streams (never secrets).
    List {
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Revoke a token: connections using it fail their next request.
    Revoke {
        name: String,
        #[command(flatten)]
        connect: ConnectArgs,
    },
}

fn parse_role(text: &str) -> Result<Role, String> {
    match text {
        "produce" => Ok(Role::Produce),
        "consume" => Ok(Role::Consume),
        "admin" => Ok(Role::Admin),
        other => Err(format!(
            "unknown role {other:?}: use produce, consume or admin"
        )),
    }
}

fn describe(info: &TokenInfo) -> String {
    let roles: Vec<&str> = info.roles.iter().map(|r| r.name()).collect();
    let streams = match &info.streams {
        Some(streams) => streams.join(","),
        None => "all streams".to_owned(),
    };
    format!("{:<24} {:<22} {streams}", info.name, roles.join(","))
}

pub async fn run(command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create {
            name,
            role,
            streams,
            connect,
        } => {
            let request = AdminRequest::CreateToken {
                name,
                roles: role,
                streams,
            };
            match connect.connect().await?.admin(request).await? {
                AdminResponse::Token(info) => {
                    println!("{}", describe(&info));
                    // The secret on a line of its own, for scripts:
                    // `weir token create ... | tail -1`.
                    println!("{}", info.secret.unwrap_or_default());
                }
                other => bail!("unexpected answer {other:?}"),
            }
        }
        TokenCommand::List { connect } => {
            match connect
                .connect()
                .await?
                .admin(AdminRequest::ListTokens)
                .await?
            {
                AdminResponse::Tokens(tokens) => {
                    for info in &tokens {
                        println!("{}", describe(info));
                    }
                }
                other => bail!("unexpected answer {other:?}"),
            }
        }
        TokenCommand::Revoke { name, connect } => {
            connect
                .connect()
                .await?
                .admin(AdminRequest::RevokeToken { name: name.clone() })
                .await?;
            println!("revoked token {name}");
        }
    }
    Ok(())
}
