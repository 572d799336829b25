//! The service over real HTTP on loopback: every status it promises, and
//! predictions equal to the library's (which `predict` prints) on the same photo.

mod support;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use caf_infer::{FaceDetector, FaceSearch, PhotoOptions, Predictor};
use caf_serve::ServeOptions;
use candle_core::Device;
use serde_json::Value;
use support::{checkpoint, fixture, http, post_image, TestServer};

#[test]
fn predictions_are_the_library_s_for_raw_bodies_and_forms() {
    let server = TestServer::start(ServeOptions::default());
    let bytes = std::fs::read(fixture("group.png")).expect("fixture");
    let reply = post_image(server.addr, "/v1/predict", &bytes);
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let served = reply.json();

    // What `predict` computes for the same file, with the same defaults.
    let predictor = Predictor::from_checkpoint(&checkpoint(server.dir.path()), &Device::Cpu).expect("predictor");
    let detector = FaceDetector::builtin(&Device::Cpu).expect("detector");
    let photo = caf_infer::read_photo(&fixture("group.png"), predictor.decode_limits()).expect("photo");
    let faces = predictor
        .predict_photo(&photo, None, &PhotoOptions::new(FaceSearch::Auto(&detector)))
        .expect("faces");
    assert!(faces.len() >= 2, "the fixture has several faces: {faces:?}");
    // Both sides print f32 values in their shortest form, as `predict --format jsonl` does.
    let printed: Value = serde_json::from_str(&serde_json::to_string(&faces).expect("JSON")).expect("JSON");
    assert_eq!(served["faces"], printed);
    assert_eq!(
        (served["width"].as_u64(), served["height"].as_u64()),
        (Some(photo.width() as u64), Some(photo.height() as u64))
    );

    // The same photo as the `image` file of a form, read whole.
    let boundary = "caf-test-boundary";
    let mut form = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"group.png\"\r\nContent-Type: image/png\r\n\r\n"
    )
    .into_bytes();
    form.extend_from_slice(&bytes);
    form.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let reply = http(
        server.addr,
        "POST",
        "/v1/predict",
        Some(&format!("multipart/form-data; boundary={boundary}")),
        &form,
    );
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.json(), served);

    // `faces=whole` takes the whole picture as one face.
    let whole = post_image(server.addr, "/v1/predict?faces=whole&face_margin=0", &bytes).json();
    assert_eq!(whole["faces"].as_array().map(Vec::len), Some(1));
    assert_eq!(whole["faces"][0]["source"], "whole");
}

#[test]
fn bad_requests_are_refused_with_a_reason() {
    let server = TestServer::start(ServeOptions {
        max_body_bytes: 64 << 10,
        ..ServeOptions::default()
    });
    let not_an_image = post_image(server.addr, "/v1/predict", b"hello, this is text");
    assert_eq!(not_an_image.status, 400);
    assert!(not_an_image.json()["error"]
        .as_str()
        .expect("a message")
        .contains("not an image"));

    let empty = post_image(server.addr, "/v1/predict", b"");
    assert_eq!(empty.status, 400);

    let oversized = post_image(server.addr, "/v1/predict", &vec![0u8; 80 << 10]);
    assert_eq!(oversized.status, 413);
    assert!(oversized.json()["error"]
        .as_str()
        .expect("a message")
        .contains("65536 bytes"));

    // A few hundred bytes declaring 60000 × 60000 pixels: refused from the header.
    let bomb = post_image(server.addr, "/v1/predict", &caf_testkit::bombs::png_declaring(60_000));
    assert_eq!(bomb.status, 413, "{}", String::from_utf8_lossy(&bomb.body));
    assert!(bomb.json()["error"].as_str().expect("a message").contains("pixels"));

    for target in [
        "/v1/predict?faces=some",
        "/v1/predict?face_margin=-1",
        "/v1/predict?size=3",
    ] {
        let reply = post_image(server.addr, target, b"x");
        assert_eq!(reply.status, 400, "{target}");
        assert!(reply.json()["error"].is_string(), "{target}");
    }
    let unknown = http(server.addr, "GET", "/v2/everything", None, b"");
    assert_eq!(unknown.status, 404);
    assert!(unknown.json()["error"]
        .as_str()
        .expect("a message")
        .contains("/v1/predict"));
}

/// A photo that keeps an inference thread busy for a while: the group
/// fixture tiled 6 × 6 (3600 × 2400 px, over a hundred faces to detect and
/// predict).
fn slow_photo() -> Vec<u8> {
    let tile = image::open(fixture("group.png")).expect("fixture").to_rgb8();
    let (w, h) = tile.dimensions();
    let picture = image::RgbImage::from_fn(6 * w, 6 * h, |x, y| *tile.get_pixel(x % w, y % h));
    let mut bytes = Vec::new();
    picture
        .write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Jpeg)
        .expect("encode");
    bytes
}

#[test]
fn a_full_queue_answers_503_and_shutdown_lets_the_request_in_flight_finish() {
    let mut server = TestServer::start(ServeOptions {
        workers: 1,
        queue: 0,
        ..ServeOptions::default()
    });
    let addr = server.addr;
    // One client keeps the only thread busy with a slow photo (sending it
    // again if it ever finds the thread busy with the other client's photo).
    let slow = slow_photo();
    let in_flight = std::thread::spawn(move || loop {
        let reply = post_image(addr, "/v1/predict", &slow);
        if reply.status != 503 {
            return (reply, Instant::now());
        }
    });
    // The other sends small photos until two in a row, 50 ms apart, find no
    // room: the slow photo is then running, since this client's own photos
    // had finished (one 503 alone could fall in the instant between the
    // thread answering a small photo and taking the next).
    let small = std::fs::read(fixture("coffee.png")).expect("fixture");
    let deadline = Instant::now() + Duration::from_secs(120);
    let busy = loop {
        let reply = post_image(addr, "/v1/predict?faces=whole", &small);
        if reply.status == 503 {
            std::thread::sleep(Duration::from_millis(50));
            let again = post_image(addr, "/v1/predict?faces=whole", &small);
            if again.status == 503 {
                break again;
            }
        }
        if Instant::now() > deadline || in_flight.is_finished() {
            break reply;
        }
    };
    assert_eq!(busy.status, 503, "{}", String::from_utf8_lossy(&busy.body));
    assert_eq!(busy.header("retry-after").as_deref(), Some("1"));
    assert!(busy.json()["error"].as_str().expect("a message").contains("busy"));

    // Shut down while the slow photo runs: it still gets its answer.
    let asked = Instant::now();
    server.shut_down().expect("a clean shutdown");
    let (reply, answered) = in_flight.join().expect("client");
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert!(
        answered > asked,
        "the slow photo was answered before the shutdown was asked: nothing was in flight"
    );
    assert!(reply.json()["faces"].as_array().is_some_and(|faces| faces.len() > 10));
    assert!(
        TcpStream::connect(addr).is_err(),
        "the server still listens {:?} after the shutdown was asked",
        asked.elapsed()
    );
}

#[test]
fn a_request_past_the_time_limit_is_answered_503() {
    let server = TestServer::start(ServeOptions {
        request_timeout: Duration::from_millis(1),
        ..ServeOptions::default()
    });
    let reply = post_image(server.addr, "/v1/predict", &slow_photo());
    assert_eq!(reply.status, 503, "{}", String::from_utf8_lossy(&reply.body));
    assert!(reply.json()["error"].as_str().expect("a message").contains("limit"));
    assert!(reply.header("retry-after").is_some());
}

#[test]
fn the_model_health_and_page_routes() {
    let server = TestServer::start(ServeOptions::default());
    let model = http(server.addr, "GET", "/v1/model", None, b"").json();
    assert_eq!(model["architecture"], "alexnet");
    assert_eq!(
        (model["input_size"].as_u64(), model["resize"].as_u64()),
        (Some(64), Some(72))
    );
    assert_eq!(server.service.info().source, model["source"].as_str().expect("source"));
    assert_eq!(model["precision"], "f32");
    assert_eq!(http(server.addr, "GET", "/healthz", None, b"").json()["status"], "ok");
    let page = http(server.addr, "GET", "/", None, b"");
    assert_eq!(page.status, 200);
    let html = String::from_utf8(page.body).expect("UTF-8");
    assert!(html.contains("never stored") && html.contains("/v1/stream"));
    assert!(
        !html.contains("src=\"http") && !html.contains("@import"),
        "the page loads nothing from elsewhere"
    );
}

#[test]
fn the_stream_answers_each_frame_in_order() {
    let server = TestServer::start(ServeOptions::default());
    let (mut socket, _) =
        tungstenite::connect(format!("ws://{}/v1/stream?faces=whole", server.addr)).expect("WebSocket");
    let frame = std::fs::read(fixture("coffee.png")).expect("fixture");
    for expected in 1..=3u64 {
        socket.send(tungstenite::Message::binary(frame.clone())).expect("send");
        let reply = socket.read().expect("a reading");
        let reading: Value = serde_json::from_str(reply.to_text().expect("text")).expect("JSON");
        assert_eq!(reading["frame"], expected);
        assert_eq!(reading["faces"].as_array().map(Vec::len), Some(1), "{reading}");
        // The same face in every frame: one track, and a reading that holds
        // still stays where it is when smoothed.
        let face = &reading["faces"][0];
        assert_eq!(face["track"], 0, "{reading}");
        assert_eq!(
            (&face["smoothed"]["valence"], &face["smoothed"]["arousal"]),
            (&face["valence"], &face["arousal"])
        );
    }
    socket
        .send(tungstenite::Message::binary(b"not a frame".to_vec()))
        .expect("send");
    let reading: Value = serde_json::from_str(socket.read().expect("reply").to_text().expect("text")).expect("JSON");
    assert_eq!(reading["frame"], 4);
    assert!(reading["error"].as_str().expect("a message").contains("not an image"));
    socket.close(None).expect("close");
}

#[test]
fn stream_tracks_follow_people_not_their_place_in_the_list() {
    let server = TestServer::start(ServeOptions::default());
    let photo = image::open(fixture("group.png")).expect("fixture").to_rgb8();
    let png = |picture: &image::RgbImage| {
        let mut bytes = Vec::new();
        picture
            .write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)
            .expect("encode");
        bytes
    };
    let (mut socket, _) = tungstenite::connect(format!("ws://{}/v1/stream", server.addr)).expect("WebSocket");
    let mut read = |frame: Vec<u8>| -> Value {
        socket.send(tungstenite::Message::binary(frame)).expect("send");
        serde_json::from_str(socket.read().expect("a reading").to_text().expect("text")).expect("JSON")
    };
    let first = read(png(&photo));
    let faces = first["faces"].as_array().expect("faces").clone();
    assert!(faces.len() >= 2, "{first}");
    let tracks: Vec<u64> = faces.iter().map(|f| f["track"].as_u64().expect("a track")).collect();
    assert_eq!(tracks, (0..faces.len() as u64).collect::<Vec<_>>());
    // The largest face (listed first) covered: the others move up the list
    // but keep their tracks.
    let covered_box = &faces[0]["box"];
    let [x, y, w, h] = ["x", "y", "width", "height"].map(|k| covered_box[k].as_f64().expect("box") as u32);
    let mut covered = photo.clone();
    for py in y.saturating_sub(h / 4)..(y + h + h / 4).min(covered.height()) {
        for px in x.saturating_sub(w / 4)..(x + w + w / 4).min(covered.width()) {
            covered.put_pixel(px, py, image::Rgb([0, 0, 0]));
        }
    }
    let second = read(png(&covered));
    let left: Vec<(u64, u64)> = second["faces"]
        .as_array()
        .expect("faces")
        .iter()
        .map(|f| (f["face"].as_u64().expect("index"), f["track"].as_u64().expect("track")))
        .collect();
    let expected: Vec<(u64, u64)> = (1..faces.len() as u64).map(|track| (track - 1, track)).collect();
    assert_eq!(left, expected, "{second}");
}
