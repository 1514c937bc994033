//! `dms-sim`: a simulated on-premise dealer management system (see
//! `dibop_dms_sim` for its API, credentials and fault injection).

use std::net::SocketAddr;

use clap::Parser;
use dibop_dms_sim::{SimAuth, serve};

/// A realistic dealer management system API for tests, benchmarks and demos.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:9100")]
    addr: SocketAddr,
    /// Accepted `X-API-Key`.
    #[arg(long, default_value = "dms-demo-key")]
    api_key: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    println!("listening http://{}", listener.local_addr()?);
    let auth = SimAuth {
        api_key: args.api_key,
        ..SimAuth::default()
    };
    serve(listener, auth, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
