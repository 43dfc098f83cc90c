//! The demo MCP server (`oauth-demo-mcp`, a `whoami` tool that reports the identity headers it was
//! given) on a free port, ended with the test.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

pub struct DemoMcp {
    child: Child,
    pub url: String,
}

impl Drop for DemoMcp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl DemoMcp {
    pub async fn start() -> Self {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_oauth-demo-mcp"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start oauth-demo-mcp");
        // Owned at once, so that a failed start still ends the process (Drop).
        let demo = Self {
            child,
            url: format!("http://127.0.0.1:{port}/mcp"),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "oauth-demo-mcp did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        demo
    }
}
