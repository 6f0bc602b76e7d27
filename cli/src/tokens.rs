//! `weir token`: create, list and delete (revoke) access tokens.

use clap::Subcommand;
use weir_client::admin::{AdminRequest, AdminResponse, Role, TokenInfo};

use super::{ConnectArgs, ListArgs, NameArgs};

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
    List(ListArgs),
    /// Print the AWS credentials (SigV4) of a token for the Kinesis API:
    /// the access key id is the token's name. Computed here from the
    /// secret; nothing is sent to the server.
    AwsCredentials {
        /// The token's name [default: admin, the first admin token].
        #[arg(long, default_value = weir::auth::FIRST_ADMIN_TOKEN_NAME)]
        name: String,
        /// The token's secret [default: DATA/admin.token].
        #[arg(long, env = "WEIR_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// The local server's data directory, to find admin.token.
        #[arg(long = "data", env = "WEIR_DATA", default_value = "./weir-data")]
        data_dir: std::path::PathBuf,
    },
    /// Delete (revoke) a token: connections using it fail their next request.
    #[command(visible_aliases = ["revoke", "rm"])]
    Delete(NameArgs),
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
                    let secret = info.secret.clone().unwrap_or_default();
                    println!("{}", describe(&info));
                    println!("The secret is shown only now. A client of this server needs:");
                    println!(
                        "  WEIR_SERVER={} WEIR_CA={} WEIR_TOKEN={secret}",
                        connect.address(),
                        connect.ca_path().display()
                    );
                    println!(
                        "  Kinesis API (SigV4): aws_access_key_id={} aws_secret_access_key={}",
                        info.name,
                        weir::auth::sigv4_secret(&secret)
                    );
                    // The secret on a line of its own, for scripts:
                    // `weir token create ... | tail -1`.
                    println!("{secret}");
                }
                other => return Err(super::unexpected(&other)),
            }
        }
        TokenCommand::List(ListArgs { output, connect }) => {
            match connect
                .connect()
                .await?
                .admin(AdminRequest::ListTokens)
                .await?
            {
                AdminResponse::Tokens(tokens) => {
                    if !output.json(&tokens)? {
                        tokens
                            .iter()
                            .for_each(|info| println!("{}", describe(info)));
                    }
                }
                other => return Err(super::unexpected(&other)),
            }
        }
        TokenCommand::AwsCredentials {
            name,
            token,
            data_dir,
        } => {
            let secret = match token {
                Some(token) => token,
                None => {
                    let path = weir::auth::admin_token_path(&data_dir);
                    weir_client::read_token_file(&path).map_err(|error| {
                        anyhow::anyhow!(
                            "no token given and {} could not be read ({error}): pass --token \
                             with a secret from `weir token create`",
                            path.display()
                        )
                    })?
                }
            };
            // The lines `~/.aws/credentials` takes under a profile.
            println!("aws_access_key_id = {name}");
            println!(
                "aws_secret_access_key = {}",
                weir::auth::sigv4_secret(&secret)
            );
        }
        TokenCommand::Delete(NameArgs { name, connect }) => {
            connect
                .connect()
                .await?
                .admin(AdminRequest::DeleteToken { name: name.clone() })
                .await?;
            println!("deleted token {name}");
        }
    }
    Ok(())
}
