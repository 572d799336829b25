//! What the service's tests share: a seeded model, a server on a loopback
//! port in a thread of its own, and a minimal HTTP/1.1 client.

#![allow(dead_code)] // each test binary uses its own part

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use caf_backbone::Arch;
use caf_infer::{FaceDetector, Predictor};
use caf_serve::{ModelInfo, ServeOptions, ServerThread, Service};
use candle_core::Device;
use serde_json::Value;

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/faces")
        .join(name)
}

/// A seeded AlexNet checkpoint at 64 px.
pub fn checkpoint(dir: &Path) -> PathBuf {
    caf_e2e::setups::seeded_checkpoint(dir, Arch::AlexNet, 3, 64, 72).expect("checkpoint")
}

pub struct TestServer {
    pub addr: SocketAddr,
    server: ServerThread,
    pub service: Arc<Service>,
    pub dir: tempfile::TempDir,
}

impl TestServer {
    pub fn start(options: ServeOptions) -> Self {
        let dir = tempfile::tempdir().expect("dir");
        let path = checkpoint(dir.path());
        let predictor = Predictor::from_checkpoint(&path, &Device::Cpu).expect("predictor");
        let detector = FaceDetector::builtin(&Device::Cpu).expect("detector");
        let info = ModelInfo {
            architecture: "alexnet".into(),
            input_size: 64,
            resize: 72,
            source: path.display().to_string(),
            training: None,
        };
        let service = Service::new(predictor, detector, info, options);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let server = ServerThread::start(listener, service.clone()).expect("server");
        Self {
            addr: server.addr(),
            server,
            service,
            dir,
        }
    }

    /// Asks for a graceful shutdown and waits for the server to return.
    pub fn shut_down(&mut self) -> std::io::Result<()> {
        self.server.shut_down()
    }
}

pub struct Reply {
    pub status: u16,
    pub headers: String,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim().to_string())
        })
    }
}

/// One HTTP/1.1 request on its own connection.
pub fn http(addr: SocketAddr, method: &str, target: &str, content_type: Option<&str>, body: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .expect("timeout");
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(content_type) = content_type {
        head.push_str(&format!("Content-Type: {content_type}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).expect("request head");
    // A server that refuses the body early may stop reading it.
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("response");
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head");
    let headers = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = headers
        .split_whitespace()
        .nth(1)
        .expect("status")
        .parse()
        .expect("a number");
    Reply {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

pub fn post_image(addr: SocketAddr, target: &str, bytes: &[u8]) -> Reply {
    http(addr, "POST", target, Some("image/png"), bytes)
}
