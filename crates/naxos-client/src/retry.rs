//! Bounded retries with exponential back-off: which errors are worth another
//! try (a wrong epoch after a layout refresh, an unavailable or overloaded
//! server, a lost connection), and a clear error when the budget is spent.

use crate::{rpc_to_error, Client, Config, Error};
use naxos_wire::rpc;
use naxos_wire::ErrorCode;
use std::time::Duration;

/// First back-off.
const BACKOFF_FIRST: Duration = Duration::from_millis(5);
/// Longest back-off.
const BACKOFF_MAX: Duration = Duration::from_millis(500);

/// The retry budget of one call.
pub(crate) struct Retry {
    left: u32,
    backoff: Duration,
}

impl Retry {
    pub(crate) fn new(config: &Config) -> Retry {
        Retry { left: config.retries_max, backoff: BACKOFF_FIRST }
    }

    /// Waits before the next try if `e` is worth one; otherwise (or when the
    /// budget is spent) returns the error to give the caller.
    pub(crate) async fn on_error(&mut self, client: &Client, e: rpc::Error, what: &str) -> Result<(), Error> {
        let retriable = match &e {
            rpc::Error::Server { error, .. } => match error.code {
                ErrorCode::WrongEpoch => {
                    let before = client.layout().epoch;
                    // A newer layout is the answer: go again at once.
                    if client.refresh_layout().await?.epoch > before && self.left > 0 {
                        self.left -= 1;
                        return Ok(());
                    }
                    true
                }
                ErrorCode::Unavailable | ErrorCode::Overloaded => true,
                _ => false,
            },
            // No answer at all: the node may be gone for good and a
            // reconfiguration may have replaced it; look for a newer layout.
            _ => {
                if let Err(refresh) = client.refresh_layout().await {
                    tracing::debug!("no newer layout after {e}: {refresh}");
                }
                true
            }
        };
        if !retriable {
            return Err(rpc_to_error(e));
        }
        self.wait(&format!("{what}: {e}")).await
    }

    /// Spends one try, sleeping first; fails when none is left.
    pub(crate) async fn wait(&mut self, last: &str) -> Result<(), Error> {
        if self.left == 0 {
            return Err(Error::Unavailable(format!("gave up after retries; last error: {last}")));
        }
        self.left -= 1;
        tracing::debug!("retrying in {:?}: {last}", self.backoff);
        tokio::time::sleep(self.backoff).await;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        Ok(())
    }
}
