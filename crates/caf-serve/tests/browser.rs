//! The web page in a real browser: a headless Chromium, driven over the
//! DevTools protocol, drops a photo on the page and turns on a camera fed
//! from a video file; the page must show what the API answers.
//!
//! Needs Chromium (`apt-get install chromium`; `.ci/run` installs it, or
//! name a binary in `CHROMIUM`). Set `CAF_SCREENSHOTS` to a folder to keep
//! the page's screenshots (docs/images/serve-photo.jpg and serve-page.jpg
//! are made this way).

mod support;

use std::io::BufRead;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use caf_serve::ServeOptions;
use serde_json::{json, Value};
use support::{fixture, post_image, TestServer};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// The Chromium binary: `CHROMIUM`, else the first of the usual names on PATH.
fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return path.into();
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if let Some(found) = std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
        {
            return found;
        }
    }
    panic!(
        "this test drives the page in Chromium, and none was found: install it (apt-get install chromium) \
         or name its binary in CHROMIUM"
    );
}

/// `frames` copies of an RGB picture as a Y4M video (4:2:0, BT.601 full
/// range), the format Chromium's fake camera reads.
fn y4m_video(picture: &image::RgbImage, frames: usize) -> Vec<u8> {
    let (w, h) = (picture.width() as usize, picture.height() as usize);
    let mut y = vec![0u8; w * h];
    let (mut u, mut v) = (vec![0u8; w * h / 4], vec![0u8; w * h / 4]);
    for (x, row, pixel) in picture.enumerate_pixels() {
        let [r, g, b] = pixel.0.map(f32::from);
        let (x, row) = (x as usize, row as usize);
        y[row * w + x] = (0.299 * r + 0.587 * g + 0.114 * b).round() as u8;
        if x % 2 == 0 && row % 2 == 0 {
            let at = (row / 2) * (w / 2) + x / 2;
            u[at] = (128.0 - 0.168_736 * r - 0.331_264 * g + 0.5 * b)
                .round()
                .clamp(0.0, 255.0) as u8;
            v[at] = (128.0 + 0.5 * r - 0.418_688 * g - 0.081_312 * b)
                .round()
                .clamp(0.0, 255.0) as u8;
        }
    }
    let mut video = format!("YUV4MPEG2 W{w} H{h} F10:1 Ip A1:1 C420jpeg\n").into_bytes();
    for _ in 0..frames {
        video.extend_from_slice(b"FRAME\n");
        for plane in [&y, &u, &v] {
            video.extend_from_slice(plane);
        }
    }
    video
}

/// A headless Chromium and one page of it, over the DevTools protocol.
struct Browser {
    child: Child,
    socket: WebSocket<MaybeTlsStream<TcpStream>>,
    session: String,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn launch(camera: &Path) -> Self {
        let profile = tempfile::tempdir().expect("profile dir");
        let child = Command::new(chromium())
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--remote-debugging-port=0",
                "--window-size=1280,1100",
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
            ])
            .arg(format!("--use-file-for-fake-video-capture={}", camera.display()))
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("Chromium starts");
        // Chromium writes the port it chose, and the browser's endpoint, here.
        let port_file = profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(60);
        let endpoint = loop {
            let lines: Vec<String> = std::fs::File::open(&port_file)
                .map(|file| std::io::BufReader::new(file).lines().map_while(Result::ok).collect())
                .unwrap_or_default();
            if let [port, path, ..] = lines.as_slice() {
                break format!("ws://127.0.0.1:{port}{path}");
            }
            assert!(
                Instant::now() < deadline,
                "Chromium did not open its DevTools port within a minute"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let (socket, _) = tungstenite::connect(&endpoint).expect("DevTools WebSocket");
        if let MaybeTlsStream::Plain(stream) = socket.get_ref() {
            stream
                .set_read_timeout(Some(Duration::from_secs(120)))
                .expect("timeout");
        }
        let mut browser = Self {
            child,
            socket,
            session: String::new(),
            next_id: 0,
            _profile: profile,
        };
        let target = browser.call("Target.createTarget", json!({ "url": "about:blank" }));
        let attached = browser.call(
            "Target.attachToTarget",
            json!({ "targetId": target["targetId"], "flatten": true }),
        );
        browser.session = attached["sessionId"].as_str().expect("a session").to_string();
        browser.call("Page.enable", json!({}));
        browser
    }

    /// Sends one command (to the page once attached) and returns its result.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut command = json!({ "id": id, "method": method, "params": params });
        if !self.session.is_empty() {
            command["sessionId"] = self.session.clone().into();
        }
        self.socket
            .send(Message::text(command.to_string()))
            .expect("send a command");
        loop {
            let message = self.socket.read().expect("a DevTools message");
            let Ok(text) = message.to_text() else { continue };
            let reply: Value = serde_json::from_str(text).expect("DevTools JSON");
            if reply["id"] == id {
                assert!(reply["error"].is_null(), "{method}: {}", reply["error"]);
                return reply["result"].clone();
            }
        }
    }

    /// Evaluates `expression` in the page (awaiting a promise) and returns its value.
    fn evaluate(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "awaitPromise": true, "returnByValue": true }),
        );
        assert!(
            result["exceptionDetails"].is_null(),
            "`{expression}` threw: {}",
            result["exceptionDetails"]
        );
        result["result"]["value"].clone()
    }

    /// Polls `expression` until it is true; the page's status line is in the failure.
    fn wait_for(&mut self, expression: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while self.evaluate(expression) != Value::Bool(true) {
            let status = self.evaluate("document.getElementById('status').textContent");
            assert!(
                Instant::now() < deadline,
                "waited {within:?} for `{expression}`; the page says {status}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The page as it is shown, kept as a JPEG in `CAF_SCREENSHOTS/name` when set.
    fn screenshot(&mut self, name: &str) -> image::RgbaImage {
        let shot = self.call("Page.captureScreenshot", json!({ "format": "jpeg", "quality": 80 }));
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("image data"))
            .expect("base64");
        if let Some(dir) = std::env::var_os("CAF_SCREENSHOTS") {
            std::fs::create_dir_all(&dir).expect("screenshot folder");
            std::fs::write(Path::new(&dir).join(name), &bytes).expect("screenshot written");
        }
        image::load_from_memory(&bytes).expect("a JPEG").to_rgba8()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The page's colour for face `i` is `PAGE_COLOURS[i % 8]` (its `COLOURS`).
const PAGE_COLOURS: [&str; 8] = [
    "#2f6fde", "#d9480f", "#2b8a3e", "#ae3ec9", "#e8590c", "#0b7285", "#c2255c", "#5f3dc4",
];

/// Whether the page's `canvas` shows `colour` (#rrggbb) at (x, y) in its own pixels, give or take antialiasing.
fn shows_colour(browser: &mut Browser, canvas: &str, x: f64, y: f64, colour: &str) -> Value {
    browser.evaluate(&format!(
        "(() => {{ const p = document.getElementById('{canvas}').getContext('2d')
             .getImageData(Math.round({x}), Math.round({y}), 1, 1).data;
           const want = [1, 3, 5].map(i => parseInt('{colour}'.slice(i, i + 2), 16));
           return want.every((c, i) => Math.abs(c - p[i]) <= 24) ? true : Array.from(p); }})()"
    ))
}

#[test]
fn the_page_reads_a_dropped_photo_and_the_camera() {
    let server = TestServer::start(ServeOptions::default());
    let photo_bytes = std::fs::read(fixture("group.png")).expect("fixture");
    let answer = post_image(server.addr, "/v1/predict", &photo_bytes).json();
    let faces = answer["faces"].as_array().expect("faces").clone();
    assert!(faces.len() >= 2, "{answer}");

    let camera_dir = tempfile::tempdir().expect("dir");
    let camera = camera_dir.path().join("camera.y4m");
    let picture = image::load_from_memory(&photo_bytes).expect("PNG").to_rgb8();
    std::fs::write(&camera, y4m_video(&picture, 5)).expect("video");
    let mut browser = Browser::launch(&camera);
    browser.call("Page.navigate", json!({ "url": format!("http://{}/", server.addr) }));
    browser.wait_for(
        "document.getElementById('model')?.textContent.startsWith('alexnet, 64 px')",
        Duration::from_secs(30),
    );

    // Drop the photo on the drop zone, as a person would.
    let encoded = base64::engine::general_purpose::STANDARD.encode(&photo_bytes);
    browser.evaluate(&format!(
        "(() => {{ const bytes = Uint8Array.from(atob('{encoded}'), c => c.charCodeAt(0));
           const transfer = new DataTransfer();
           transfer.items.add(new File([bytes], 'group.png', {{ type: 'image/png' }}));
           document.getElementById('drop').dispatchEvent(new DragEvent('drop', {{ dataTransfer: transfer, bubbles: true, cancelable: true }}));
           return true; }})()"
    ));
    browser.wait_for(
        "document.getElementById('status').textContent.includes('face(s) in group.png')",
        Duration::from_secs(60),
    );
    // The table holds the API's numbers, face by face.
    let shown = browser.evaluate(
        "[...document.querySelectorAll('#readings tr')].map(r => [Number(r.dataset.face), Number(r.dataset.valence), Number(r.dataset.arousal)])",
    );
    let expected: Vec<Value> = faces
        .iter()
        .map(|f| json!([f["face"], f["valence"], f["arousal"]]))
        .collect();
    assert_eq!(shown, Value::Array(expected));
    // Each face's box is drawn over the photo (its left edge, in its colour),
    // and its point on the circumplex.
    let first = &faces[0];
    let (scale_x, scale_y) = (
        browser
            .evaluate("document.getElementById('view').width")
            .as_f64()
            .expect("width")
            / 640.0,
        browser
            .evaluate("document.getElementById('view').height")
            .as_f64()
            .expect("height")
            / 480.0,
    );
    let [x, y, h] = ["x", "y", "height"].map(|k| first["box"][k].as_f64().expect("box"));
    let edge = shows_colour(
        &mut browser,
        "view",
        x * scale_x,
        (y + h / 2.0) * scale_y,
        PAGE_COLOURS[0],
    );
    assert_eq!(edge, Value::Bool(true), "the first face's box edge shows {edge}");
    // The last face's point is drawn over any it overlaps.
    let last = faces.last().expect("faces");
    let clamp = |v: &Value| v.as_f64().expect("a reading").clamp(-1.0, 1.0);
    let (mid, radius) = (210.0, 176.0);
    let colour = PAGE_COLOURS[last["face"].as_u64().expect("index") as usize % PAGE_COLOURS.len()];
    let point = shows_colour(
        &mut browser,
        "circumplex",
        mid + clamp(&last["valence"]) * radius,
        mid - clamp(&last["arousal"]) * radius,
        colour,
    );
    assert_eq!(
        point,
        Value::Bool(true),
        "the last face's circumplex point shows {point}, not {colour}"
    );
    let page = browser.screenshot("serve-photo.jpg");
    assert!(page.width() >= 1000, "a screenshot of the page");

    // The camera (a video of the same photo): frames go over the stream and
    // each reading is shown, with the recent path and the timeline.
    browser.evaluate("document.getElementById('camera').click(), true");
    browser.wait_for("history.length >= 3", Duration::from_secs(120));
    let status = browser.evaluate("document.getElementById('status').textContent");
    assert!(
        status.as_str().is_some_and(|s| s.starts_with("camera on: frame")),
        "{status}"
    );
    let camera_faces = browser.evaluate("history[history.length - 1].faces.length");
    assert_eq!(
        camera_faces,
        json!(faces.len()),
        "the camera's frame shows the photo's faces"
    );
    assert_eq!(browser.evaluate("paths.size"), json!(faces.len()));
    // Each person keeps their track from frame to frame.
    let tracks: Vec<Value> = (0..faces.len()).map(|track| json!(track)).collect();
    assert_eq!(
        browser.evaluate("history.every(entry => entry.faces.map(f => f.face).sort().join() === history[0].faces.map(f => f.face).sort().join()) && history[0].faces.map(f => f.face).sort()"),
        Value::Array(tracks)
    );
    browser.screenshot("serve-page.jpg");
    browser.evaluate("document.getElementById('camera').click(), true");
    browser.wait_for(
        "socket === null && document.getElementById('camera').textContent === 'Start the camera'",
        Duration::from_secs(10),
    );
}
