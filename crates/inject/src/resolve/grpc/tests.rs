//! The HTTP/2 and gRPC framing against scripted peers: well-formed answers in the shapes real
//! servers send (Go's gRPC server: SETTINGS first, HPACK with its dynamic table, trailers),
//! each protocol event the client must handle, and malformed or hostile byte streams, which
//! must end in an error, never a panic or an unbounded allocation. The real peer (containerd's
//! CRI server) is exercised end to end by `tests/k8s.rs`.

use std::io::{self, Cursor, Read, Write};
use std::time::Duration;

use proptest::prelude::*;

use super::*;

/// A peer whose bytes are all known in advance; what the client writes is kept.
struct Scripted {
    input: Cursor<Vec<u8>>,
    output: Vec<u8>,
}

impl Read for Scripted {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.input.read(buf)
    }
}

impl Write for Scripted {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Transport for Scripted {
    fn set_timeout(&mut self, _: Duration) -> io::Result<()> {
        Ok(())
    }
}

/// A peer that never answers.
struct Silent;

impl Read for Silent {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }
}

impl Write for Silent {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Transport for Silent {
    fn set_timeout(&mut self, _: Duration) -> io::Result<()> {
        Ok(())
    }
}

/// The message used for requests and responses: a string and a number.
#[derive(Clone, PartialEq, prost::Message)]
struct Echo {
    #[prost(string, tag = "1")]
    text: String,
    #[prost(uint32, tag = "2")]
    number: u32,
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    frame_into(&mut out, kind, flags, stream, payload);
    out
}

/// What a server writes: frames, with one HPACK encoder across all header blocks.
struct Server {
    bytes: Vec<u8>,
    encoder: loona_hpack::Encoder<'static>,
}

impl Server {
    fn new() -> Server {
        let mut server = Server {
            bytes: Vec::new(),
            encoder: loona_hpack::Encoder::new(),
        };
        // Go's server: its SETTINGS, then the ACK of ours.
        let mut settings = Vec::new();
        settings.extend_from_slice(&setting::MAX_FRAME_SIZE.to_be_bytes());
        settings.extend_from_slice(&16_384u32.to_be_bytes());
        server.push(kind::SETTINGS, 0, 0, &settings);
        server.push(kind::SETTINGS, flag::ACK, 0, &[]);
        server
    }

    fn push(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) -> &mut Server {
        self.bytes.extend(frame(kind, flags, stream, payload));
        self
    }

    fn block(&mut self, fields: &[(&str, &str)]) -> Vec<u8> {
        self.encoder
            .encode(fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())))
    }

    fn headers(&mut self, stream: u32, fields: &[(&str, &str)], end_stream: bool) -> &mut Server {
        let block = self.block(fields);
        let flags = flag::END_HEADERS | if end_stream { flag::END_STREAM } else { 0 };
        self.push(kind::HEADERS, flags, stream, &block)
    }

    /// A complete OK answer on `stream`.
    fn answer(&mut self, stream: u32, message: &Echo) -> &mut Server {
        self.headers(
            stream,
            &[(":status", "200"), ("content-type", "application/grpc")],
            false,
        );
        self.push(kind::DATA, 0, stream, &grpc_body(message));
        self.headers(stream, &[("grpc-status", "0"), ("grpc-message", "")], true)
    }

    fn channel(&self) -> Channel<Scripted> {
        Channel::new(
            Scripted {
                input: Cursor::new(self.bytes.clone()),
                output: Vec::new(),
            },
            Duration::from_secs(5),
        )
        .unwrap()
    }
}

/// A CRI runtime on `socket` that answers one connection's calls, in order, with `answers`
/// (encoded messages), whatever was asked: for resolution tests with runtimes that say what
/// a test wants them to say.
pub(in crate::resolve) fn serve_canned(socket: &std::path::Path, answers: Vec<Vec<u8>>) {
    let listener = std::os::unix::net::UnixListener::bind(socket).unwrap();
    std::thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else {
            return;
        };
        let mut server = Server::new();
        for (i, message) in answers.iter().enumerate() {
            let stream_id = 2 * i as u32 + 1;
            server.headers(
                stream_id,
                &[(":status", "200"), ("content-type", "application/grpc")],
                false,
            );
            let mut body = vec![0];
            body.extend_from_slice(&(message.len() as u32).to_be_bytes());
            body.extend_from_slice(message);
            server.push(kind::DATA, 0, stream_id, &body);
            server.headers(stream_id, &[("grpc-status", "0")], true);
        }
        let _ = stream.write_all(&server.bytes);
        let _ = stream.read_to_end(&mut Vec::new());
    });
}

fn grpc_body(message: &Echo) -> Vec<u8> {
    let bytes = prost::Message::encode_to_vec(message);
    let mut body = vec![0];
    body.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    body.extend_from_slice(&bytes);
    body
}

fn echo(text: &str) -> Echo {
    Echo {
        text: text.into(),
        number: 7,
    }
}

fn call(channel: &mut Channel<Scripted>) -> Result<Echo, GrpcError> {
    channel.call("test.Service", "Method", &echo("request"))
}

/// The frames the client wrote, after its preface.
fn written_frames(output: &[u8]) -> Vec<(FrameHeader, Vec<u8>)> {
    assert!(output.starts_with(PREFACE));
    let mut rest = &output[PREFACE.len()..];
    let mut frames = Vec::new();
    while !rest.is_empty() {
        let header = FrameHeader::parse(rest[..9].try_into().unwrap());
        frames.push((header, rest[9..9 + header.length].to_vec()));
        rest = &rest[9 + header.length..];
    }
    frames
}

#[test]
fn a_call_and_what_goes_on_the_wire() {
    let mut server = Server::new();
    server.answer(1, &echo("answer"));
    let mut channel = server.channel();
    assert_eq!(call(&mut channel).unwrap(), echo("answer"));

    let frames = written_frames(&channel.io.output);
    let kinds: Vec<u8> = frames.iter().map(|(h, _)| h.kind).collect();
    // SETTINGS, connection WINDOW_UPDATE, HEADERS, DATA, ACK of the server's SETTINGS, and
    // the connection window given back.
    assert_eq!(
        kinds,
        [
            kind::SETTINGS,
            kind::WINDOW_UPDATE,
            kind::HEADERS,
            kind::DATA,
            kind::SETTINGS,
            kind::WINDOW_UPDATE
        ]
    );
    let (headers, block) = &frames[2];
    assert_eq!((headers.stream, headers.flags), (1, flag::END_HEADERS));
    // Our header block, read by an independent HPACK decoder.
    let fields = loona_hpack::Decoder::new().decode(block).unwrap();
    let field = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n == name.as_bytes())
            .map(|(_, v)| String::from_utf8(v.clone()).unwrap())
    };
    assert_eq!(field(":path").as_deref(), Some("/test.Service/Method"));
    assert_eq!(field(":method").as_deref(), Some("POST"));
    assert_eq!(field("content-type").as_deref(), Some("application/grpc"));
    assert_eq!(field("te").as_deref(), Some("trailers"));
    let (data, body) = &frames[3];
    assert_eq!((data.stream, data.flags), (1, flag::END_STREAM));
    assert_eq!(body, &grpc_body(&echo("request")));
    assert_eq!(frames[4].0.flags, flag::ACK);
    let given_back = u32::from_be_bytes(frames[5].1[..4].try_into().unwrap());
    assert_eq!(given_back as usize, grpc_body(&echo("answer")).len());
}

#[test]
fn calls_one_after_another_on_odd_streams() {
    let mut server = Server::new();
    server.answer(1, &echo("one"));
    server.answer(3, &echo("two"));
    server.answer(5, &echo("three"));
    let mut channel = server.channel();
    for want in ["one", "two", "three"] {
        assert_eq!(call(&mut channel).unwrap().text, want);
    }
}

#[test]
fn continuation_padding_ping_and_window_updates() {
    let mut server = Server::new();
    server.push(kind::PING, 0, 0, b"12345678");
    server.push(kind::WINDOW_UPDATE, 0, 0, &1000u32.to_be_bytes());
    server.push(kind::WINDOW_UPDATE, 0, 1, &1000u32.to_be_bytes());
    // An unknown frame type and a PRIORITY frame are ignored.
    server.push(0x42, 0, 0, b"whatever");
    server.push(0x2, 0, 1, &[0, 0, 0, 0, 16]);
    let block = server.block(&[
        (":status", "200"),
        ("content-type", "application/grpc+proto"),
        ("x-long", &"v".repeat(3000)),
    ]);
    let (first, rest) = block.split_at(10);
    // HEADERS padded and with priority fields, then two CONTINUATIONs.
    let mut payload = vec![4];
    payload.extend_from_slice(&[0x80, 0, 0, 3, 200]);
    payload.extend_from_slice(first);
    payload.extend_from_slice(&[0; 4]);
    server.push(kind::HEADERS, flag::PADDED | flag::PRIORITY, 1, &payload);
    let (middle, last) = rest.split_at(rest.len() / 2);
    server.push(kind::CONTINUATION, 0, 1, middle);
    server.push(kind::CONTINUATION, flag::END_HEADERS, 1, last);
    // The message split over two DATA frames, the first padded.
    let body = grpc_body(&echo("split"));
    let (a, b) = body.split_at(3);
    let mut padded = vec![2];
    padded.extend_from_slice(a);
    padded.extend_from_slice(&[0, 0]);
    server.push(kind::DATA, flag::PADDED, 1, &padded);
    server.push(kind::DATA, 0, 1, b);
    server.headers(1, &[("grpc-status", "0")], true);
    let mut channel = server.channel();
    assert_eq!(call(&mut channel).unwrap(), echo("split"));
    let frames = written_frames(&channel.io.output);
    let pong = frames
        .iter()
        .find(|(h, _)| h.kind == kind::PING)
        .expect("PING answered");
    assert_eq!(
        (pong.0.flags, pong.1.as_slice()),
        (flag::ACK, &b"12345678"[..])
    );
}

#[test]
fn a_request_waits_for_the_peers_window() {
    // A request larger than the initial 65,535-byte windows: the client sends what they
    // allow, in frames no larger than 16 KiB, waits for WINDOW_UPDATE, then sends the rest.
    let big = Echo {
        text: "x".repeat(70_000),
        number: 1,
    };
    let mut server = Server::new();
    server.push(kind::WINDOW_UPDATE, 0, 0, &10_000u32.to_be_bytes());
    server.push(kind::WINDOW_UPDATE, 0, 1, &10_000u32.to_be_bytes());
    server.answer(1, &echo("ok"));
    let mut channel = server.channel();
    let answer: Echo = channel.call("test.Service", "Method", &big).unwrap();
    assert_eq!(answer, echo("ok"));
    let data: Vec<usize> = written_frames(&channel.io.output)
        .iter()
        .filter(|(h, _)| h.kind == kind::DATA)
        .map(|(h, _)| h.length)
        .collect();
    assert!(data.iter().all(|&n| n <= MAX_FRAME_SIZE), "{data:?}");
    assert_eq!(data.iter().sum::<usize>(), grpc_body(&big).len());
    let before_update: usize = data.iter().take(4).sum();
    assert_eq!(before_update, 65_535);
}

#[test]
fn grpc_errors_carry_code_and_decoded_message() {
    let mut server = Server::new();
    // Trailers-only: the status in the only header block.
    server.headers(
        1,
        &[
            (":status", "200"),
            ("content-type", "application/grpc"),
            ("grpc-status", "12"),
            (
                "grpc-message",
                "unknown service runtime.v1.RuntimeService%0a%1b[31m",
            ),
        ],
        true,
    );
    let mut channel = server.channel();
    let err = call(&mut channel).unwrap_err();
    assert!(err.is_unimplemented(), "{err:?}");
    let text = err.to_string();
    assert_eq!(
        text,
        "Method failed: gRPC status 12 (UNIMPLEMENTED): unknown service \
         runtime.v1.RuntimeService??[31m"
    );
}

fn error_of(server: &Server) -> String {
    call(&mut server.channel()).unwrap_err().to_string()
}

#[test]
fn protocol_events_that_end_a_call() {
    let mut s = Server::new();
    s.push(
        kind::GOAWAY,
        0,
        0,
        &[0, 0, 0, 0, 0, 0, 0, 2, b'b', b'y', 0x1b],
    );
    assert_eq!(
        error_of(&s),
        "the runtime closed the connection (GOAWAY, HTTP/2 error 0x2: by?)"
    );

    let mut s = Server::new();
    s.push(kind::RST_STREAM, 0, 1, &8u32.to_be_bytes());
    assert_eq!(
        error_of(&s),
        "the runtime reset the call (RST_STREAM, HTTP/2 error 0x8)"
    );

    let mut s = Server::new();
    s.headers(1, &[(":status", "503")], true);
    assert_eq!(error_of(&s), "not a gRPC answer: HTTP status 503");

    let mut s = Server::new();
    s.headers(
        1,
        &[(":status", "200"), ("content-type", "text/html")],
        false,
    );
    s.push(kind::DATA, flag::END_STREAM, 1, b"<html>");
    assert_eq!(
        error_of(&s),
        "not a gRPC answer: no grpc-status in the trailers"
    );

    let mut s = Server::new();
    s.headers(
        1,
        &[(":status", "200"), ("content-type", "application/grpc")],
        false,
    );
    let mut body = grpc_body(&echo("x"));
    body[0] = 1;
    s.push(kind::DATA, 0, 1, &body);
    s.headers(1, &[("grpc-status", "0")], true);
    assert_eq!(
        error_of(&s),
        "not a gRPC answer: a compressed message, which was not asked for"
    );

    // A frame larger than we accept is refused from its header alone.
    let mut s = Server::new();
    s.bytes
        .extend_from_slice(&[0xff, 0xff, 0xff, kind::DATA, 0, 0, 0, 0, 1]);
    assert_eq!(
        error_of(&s),
        "not a gRPC answer: a frame of 16777215 bytes (at most 16384)"
    );

    // The peer hangs up mid-answer.
    let mut s = Server::new();
    s.headers(1, &[(":status", "200")], false);
    s.bytes
        .extend_from_slice(&[0, 0, 9, kind::DATA, 0, 0, 0, 0, 1, 0]);
    assert_eq!(error_of(&s), "the connection failed");

    let mut s = Server::new();
    s.push(kind::PUSH_PROMISE, flag::END_HEADERS, 1, &[0, 0, 0, 2]);
    assert!(error_of(&s).contains("PUSH_PROMISE"));

    let mut s = Server::new();
    s.headers(1, &[(":status", "200")], false);
    s.push(kind::CONTINUATION, flag::END_HEADERS, 1, &[]);
    assert!(error_of(&s).contains("CONTINUATION without HEADERS"));
}

#[test]
fn an_endless_header_block_is_cut_off() {
    let mut s = Server::new();
    s.push(kind::HEADERS, 0, 1, &[0x88]);
    for _ in 0..(MAX_HEADER_BLOCK / MAX_FRAME_SIZE + 2) {
        s.push(kind::CONTINUATION, 0, 1, &[0x88; MAX_FRAME_SIZE]);
    }
    assert!(error_of(&s).contains("a header block larger than"));
}

#[test]
fn an_endless_message_is_cut_off() {
    let mut s = Server::new();
    s.headers(
        1,
        &[(":status", "200"), ("content-type", "application/grpc")],
        false,
    );
    let chunk = vec![0u8; MAX_FRAME_SIZE];
    for _ in 0..=(MAX_MESSAGE / MAX_FRAME_SIZE + 1) {
        s.push(kind::DATA, 0, 1, &chunk);
    }
    let mut channel = s.channel();
    let err = call(&mut channel).unwrap_err().to_string();
    assert!(err.contains("a response larger than"), "{err}");
}

#[test]
fn a_silent_peer_times_out() {
    let mut channel = Channel::new(Silent, Duration::from_millis(50)).unwrap();
    let err = channel
        .call::<Echo>("test.Service", "Method", &echo("x"))
        .unwrap_err();
    assert!(matches!(err, GrpcError::TimedOut(_)), "{err:?}");
}

#[test]
fn unary_message_framing() {
    assert_eq!(unary_message(&[0, 0, 0, 0, 2, 8, 1]).unwrap(), &[8, 1]);
    assert_eq!(unary_message(&[0, 0, 0, 0, 0]).unwrap(), &[] as &[u8]);
    for bad in [
        &[][..],
        &[0, 0, 0, 0][..],
        &[0, 0, 0, 0, 3, 1][..],
        &[0, 0, 0, 0, 1, 1, 2][..],
        &[0, 0xff, 0xff, 0xff, 0xff][..],
        &[2, 0, 0, 0, 0][..],
    ] {
        assert!(unary_message(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn frame_headers_round_trip() {
    let header = FrameHeader {
        length: 0x01_02_03,
        kind: 9,
        flags: 0xa5,
        stream: 0x7fff_fffe,
    };
    assert_eq!(FrameHeader::parse(&header.encode()), header);
    // The reserved bit is ignored on receipt.
    let mut bytes = header.encode();
    bytes[5] |= 0x80;
    assert_eq!(FrameHeader::parse(&bytes), header);
}

/// A valid answer cut, mutated, and with fragments of frames spliced in.
fn mutated_answer() -> impl Strategy<Value = Vec<u8>> {
    let mut server = Server::new();
    server.push(kind::PING, 0, 0, b"abcdefgh");
    server.answer(1, &echo("fuzz"));
    let base = server.bytes.clone();
    let edits = prop::collection::vec(
        (
            0..4u8,
            any::<prop::sample::Index>(),
            any::<u8>(),
            0..24usize,
        ),
        0..6,
    );
    edits.prop_map(move |edits| {
        let mut bytes = base.clone();
        for (op, at, byte, len) in edits {
            let at = at.index(bytes.len() + 1);
            match op {
                0 => bytes.truncate(at),
                1 if at < bytes.len() => bytes[at] = byte,
                2 => {
                    let end = (at + len).min(bytes.len());
                    bytes.drain(at..end);
                }
                _ => {
                    // A frame header with a random length and type.
                    let header = [byte, byte, len as u8, byte % 10, byte, 0, 0, 0, 1];
                    bytes.splice(at..at, header);
                }
            }
        }
        bytes
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    /// Whatever the peer sends, a call ends (Ok or Err) without a panic, and what it kept is
    /// within the limits.
    #[test]
    fn any_answer_ends_the_call(bytes in mutated_answer()) {
        let mut channel = Channel::new(
            Scripted { input: Cursor::new(bytes), output: Vec::new() },
            Duration::from_secs(5),
        ).unwrap();
        let _ = call(&mut channel);
        let _ = call(&mut channel);
        prop_assert!(channel.unacknowledged <= RECEIVE_WINDOW);
    }

    /// Random bytes after a valid SETTINGS frame.
    #[test]
    fn random_bytes_end_the_call(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        let mut input = Server::new().bytes;
        input.extend(bytes);
        let mut channel = Channel::new(
            Scripted { input: Cursor::new(input), output: Vec::new() },
            Duration::from_secs(5),
        ).unwrap();
        let _ = call(&mut channel);
    }

    /// Header blocks of random bytes: HPACK errors are errors.
    #[test]
    fn random_header_blocks(block in prop::collection::vec(any::<u8>(), 0..512), end in any::<bool>()) {
        let mut server = Server::new();
        let flags = flag::END_HEADERS | if end { flag::END_STREAM } else { 0 };
        server.push(kind::HEADERS, flags, 1, &block);
        let _ = call(&mut server.channel());
    }
}
