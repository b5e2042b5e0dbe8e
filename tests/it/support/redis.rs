//! A Redis server of a test's own, to stop or freeze mid-test.

use std::process::{Child, Command, Stdio};

pub struct OwnRedis {
    child: Child,
    pub url: String,
}

impl OwnRedis {
    pub fn start() -> OwnRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (make test installs it)");
        let mut own = OwnRedis { child, url: format!("redis://127.0.0.1:{port}") };
        // redis-server says when it accepts connections; wait for that line, not for time.
        use std::io::{BufRead, BufReader};
        let stdout = own.child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        assert!(lines.by_ref().map_while(Result::ok).any(|l| l.contains("Ready to accept connections")));
        std::thread::spawn(move || lines.for_each(drop));
        own
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Freezes the server (SIGSTOP): connections stay open and commands go unanswered, as with
    /// a Redis that hangs rather than one that is down.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, which: &str) {
        let sent = Command::new("kill").args([which, &self.child.id().to_string()]).status().unwrap();
        assert!(sent.success());
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

