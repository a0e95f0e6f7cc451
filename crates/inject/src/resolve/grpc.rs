//! A blocking gRPC client for unary calls over HTTP/2 on a unix socket: what the CRI-socket
//! fallback needs, and no more.
//!
//! Blocking for the reason the Docker client is (crashcart forks and calls `setns` after
//! resolving; an async runtime's threads must not exist then), and hand-rolled because every
//! HTTP/2 crate is built on one. One connection carries the calls one after another, each on
//! its own stream (RFC 9113): the client preface and SETTINGS, a HEADERS frame (HPACK by
//! `loona-hpack`; the request's fields are sent as literals that never touch the dynamic
//! table) and DATA frames with the length-prefixed protobuf message, then the response's
//! HEADERS, DATA and trailers (`grpc-status`, `grpc-message`), with CONTINUATION, PING,
//! SETTINGS, WINDOW_UPDATE, RST_STREAM and GOAWAY handled as they come.
//!
//! The runtime behind the socket runs as root, but nothing it sends is trusted to be well
//! formed: every frame is at most [`MAX_FRAME_SIZE`] (what we advertise; larger is a
//! protocol error, refused before it is read), a header block at most [`MAX_HEADER_BLOCK`], a
//! message at most [`MAX_MESSAGE`], and each call ends by its deadline however the peer
//! trickles bytes. Receive windows are sized so that one maximal message always fits; the
//! connection's window is given back after each call.

use std::borrow::Cow;
use std::fmt;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use loona_hpack::encoder::encode_integer_into;

/// The largest frame payload accepted: the protocol's default `SETTINGS_MAX_FRAME_SIZE`, which
/// we never raise.
pub(crate) const MAX_FRAME_SIZE: usize = 16_384;

/// The largest header block (HEADERS plus CONTINUATIONs) accepted, encoded.
pub(crate) const MAX_HEADER_BLOCK: usize = 64 << 10;

/// The largest gRPC message accepted (kubelet's own limit for CRI responses).
pub(crate) const MAX_MESSAGE: usize = 16 << 20;

/// The HPACK dynamic table the peer may use (the protocol's default; never raised).
const HEADER_TABLE_SIZE: usize = 4096;

/// Our receive window, per stream and for the connection: one maximal message and its
/// 5-byte prefix, with room to spare.
const RECEIVE_WINDOW: u32 = (MAX_MESSAGE + (64 << 10)) as u32;

/// The window every HTTP/2 connection and stream starts with.
const DEFAULT_WINDOW: u32 = 65_535;

/// The largest window the protocol allows.
const MAX_WINDOW: i64 = (1 << 31) - 1;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Frame types (RFC 9113 section 6).
mod kind {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PUSH_PROMISE: u8 = 0x5;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;
}

/// Frame flags.
mod flag {
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PADDED: u8 = 0x8;
    pub const PRIORITY: u8 = 0x20;
}

/// SETTINGS identifiers.
mod setting {
    pub const ENABLE_PUSH: u16 = 0x2;
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    pub const MAX_FRAME_SIZE: u16 = 0x5;
    pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    /// Reading or writing the socket failed.
    #[error("the connection failed")]
    Io(#[source] io::Error),
    /// The call did not finish by its deadline.
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
    /// The peer does not speak HTTP/2 and gRPC as they are specified.
    #[error("not a gRPC answer: {0}")]
    Protocol(String),
    /// The peer is closing the connection and will not process the call.
    #[error("the runtime closed the connection (GOAWAY, HTTP/2 error {code:#x}{})", debug_suffix(.debug))]
    GoAway {
        /// HTTP/2 error code.
        code: u32,
        /// The peer's debug data, printable.
        debug: String,
    },
    /// The peer reset the call's stream.
    #[error("the runtime reset the call (RST_STREAM, HTTP/2 error {0:#x})")]
    Reset(u32),
    /// The call completed with a non-OK gRPC status.
    #[error("{method} failed: gRPC status {code} ({}){}", status_name(*.code), debug_suffix(.message))]
    Status {
        /// The method called.
        method: String,
        /// gRPC status code.
        code: u32,
        /// `grpc-message`, decoded, printable.
        message: String,
    },
}

impl GrpcError {
    /// gRPC's `UNIMPLEMENTED`: the socket serves gRPC, but not this service.
    pub(crate) fn is_unimplemented(&self) -> bool {
        matches!(self, GrpcError::Status { code: 12, .. })
    }
}

fn debug_suffix(text: &str) -> String {
    if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    }
}

/// The name of a gRPC status code.
fn status_name(code: u32) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "unknown code",
    }
}

fn protocol(what: impl fmt::Display) -> GrpcError {
    GrpcError::Protocol(what.to_string())
}

/// A byte stream with a deadline: the unix socket, or a scripted peer in tests.
pub(crate) trait Transport: Read + Write {
    /// Makes reads and writes fail once `remaining` has passed.
    fn set_timeout(&mut self, remaining: Duration) -> io::Result<()>;
}

impl Transport for UnixStream {
    fn set_timeout(&mut self, remaining: Duration) -> io::Result<()> {
        // A zero timeout means "none" to the kernel interface; keep at least a millisecond.
        let remaining = remaining.max(Duration::from_millis(1));
        self.set_read_timeout(Some(remaining))?;
        self.set_write_timeout(Some(remaining))
    }
}

/// A frame's 9-byte header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    /// Payload length (24 bits).
    pub length: usize,
    /// Frame type.
    pub kind: u8,
    /// Flags.
    pub flags: u8,
    /// Stream identifier (31 bits; the reserved bit is ignored, as the protocol says).
    pub stream: u32,
}

impl FrameHeader {
    /// Parses a frame header.
    pub(crate) fn parse(bytes: &[u8; 9]) -> FrameHeader {
        FrameHeader {
            length: usize::from(bytes[0]) << 16
                | usize::from(bytes[1]) << 8
                | usize::from(bytes[2]),
            kind: bytes[3],
            flags: bytes[4],
            stream: u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) & 0x7fff_ffff,
        }
    }

    fn encode(self) -> [u8; 9] {
        let len = self.length as u32;
        let stream = self.stream.to_be_bytes();
        [
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8,
            self.kind,
            self.flags,
            stream[0],
            stream[1],
            stream[2],
            stream[3],
        ]
    }
}

/// The payload of a DATA or HEADERS frame without its padding (and, for HEADERS, its priority
/// fields).
pub(crate) fn unpad<'a>(header: &FrameHeader, payload: &'a [u8]) -> Result<&'a [u8], GrpcError> {
    let mut body = payload;
    let mut pad = 0;
    if header.flags & flag::PADDED != 0 {
        let (&len, rest) = body
            .split_first()
            .ok_or_else(|| protocol("padded frame without a pad length"))?;
        pad = usize::from(len);
        body = rest;
    }
    if header.kind == kind::HEADERS && header.flags & flag::PRIORITY != 0 {
        body = body
            .get(5..)
            .ok_or_else(|| protocol("HEADERS frame too short for its priority"))?;
    }
    let end = body
        .len()
        .checked_sub(pad)
        .ok_or_else(|| protocol("padding longer than the frame"))?;
    Ok(&body[..end])
}

/// The one message of a unary gRPC response body: a 5-byte prefix (compressed flag, big-endian
/// length) and exactly that many bytes.
pub(crate) fn unary_message(body: &[u8]) -> Result<&[u8], GrpcError> {
    let (prefix, rest) = body
        .split_first_chunk::<5>()
        .ok_or_else(|| protocol(format!("a response body of {} bytes", body.len())))?;
    if prefix[0] != 0 {
        // We send no grpc-accept-encoding, so a compressed message is not ours to read.
        return Err(protocol("a compressed message, which was not asked for"));
    }
    let length = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
    if length > MAX_MESSAGE {
        return Err(protocol(format!("a message of {length} bytes")));
    }
    if rest.len() != length {
        return Err(protocol(format!(
            "a {length}-byte message followed by {} bytes",
            rest.len()
        )));
    }
    Ok(rest)
}

/// Percent-decodes `grpc-message` and keeps it printable and short.
fn printable_message(raw: &[u8]) -> String {
    let decoded: Vec<u8> = percent_encoding::percent_decode(raw).collect();
    String::from_utf8_lossy(&decoded)
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(512)
        .collect()
}

/// What the response's header blocks said that matters.
#[derive(Debug, Default)]
struct ResponseHeaders {
    http_status: Option<Vec<u8>>,
    content_type: Option<Vec<u8>>,
    grpc_status: Option<Vec<u8>>,
    grpc_message: Option<Vec<u8>>,
}

impl ResponseHeaders {
    /// Keeps the fields that matter, each cut to a length no honest peer exceeds.
    fn take(&mut self, name: Cow<'_, [u8]>, value: Cow<'_, [u8]>) {
        let slot = match &*name {
            b":status" => &mut self.http_status,
            b"content-type" => &mut self.content_type,
            b"grpc-status" => &mut self.grpc_status,
            b"grpc-message" => &mut self.grpc_message,
            _ => return,
        };
        *slot = Some(value[..value.len().min(2048)].to_vec());
    }
}

/// The state of the call in flight.
struct Call {
    stream: u32,
    headers: ResponseHeaders,
    /// Header blocks seen (response headers, then trailers).
    header_blocks: usize,
    body: Vec<u8>,
    ended: bool,
    /// How much more we may send on the stream.
    send_window: i64,
}

/// A connection to a gRPC server.
pub(crate) struct Channel<T: Transport> {
    io: T,
    decoder: loona_hpack::Decoder<'static>,
    next_stream: u32,
    /// How much more we may send on the connection.
    send_window: i64,
    /// The peer's initial stream window and largest frame.
    peer_initial_window: i64,
    peer_max_frame: usize,
    /// DATA bytes received since our connection window was last given back.
    unacknowledged: u32,
    /// Set by GOAWAY: streams above it will not be processed.
    going_away: Option<u32>,
    timeout: Duration,
    deadline: Instant,
}

impl<T: Transport> Channel<T> {
    /// Starts HTTP/2 on `io`: sends the preface, our SETTINGS and the connection window.
    pub(crate) fn new(io: T, timeout: Duration) -> Result<Channel<T>, GrpcError> {
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(HEADER_TABLE_SIZE);
        let mut channel = Channel {
            io,
            decoder,
            next_stream: 1,
            send_window: i64::from(DEFAULT_WINDOW),
            peer_initial_window: i64::from(DEFAULT_WINDOW),
            peer_max_frame: MAX_FRAME_SIZE,
            unacknowledged: 0,
            going_away: None,
            timeout,
            deadline: Instant::now() + timeout,
        };
        let mut settings = Vec::new();
        for (id, value) in [
            (setting::ENABLE_PUSH, 0),
            (setting::INITIAL_WINDOW_SIZE, RECEIVE_WINDOW),
            (setting::MAX_HEADER_LIST_SIZE, MAX_HEADER_BLOCK as u32),
        ] {
            settings.extend_from_slice(&id.to_be_bytes());
            settings.extend_from_slice(&value.to_be_bytes());
        }
        let mut out = PREFACE.to_vec();
        frame_into(&mut out, kind::SETTINGS, 0, 0, &settings);
        frame_into(
            &mut out,
            kind::WINDOW_UPDATE,
            0,
            0,
            &(RECEIVE_WINDOW - DEFAULT_WINDOW).to_be_bytes(),
        );
        channel.write(&out)?;
        Ok(channel)
    }

    /// Calls `/SERVICE/METHOD` with `request` and decodes the answer.
    pub(crate) fn call<Resp: prost::Message + Default>(
        &mut self,
        service: &str,
        method: &str,
        request: &impl prost::Message,
    ) -> Result<Resp, GrpcError> {
        self.deadline = Instant::now() + self.timeout;
        if self.going_away.is_some_and(|last| self.next_stream > last) {
            return Err(GrpcError::GoAway {
                code: 0,
                debug: "no new calls on this connection".into(),
            });
        }
        let stream = self.next_stream;
        self.next_stream = stream
            .checked_add(2)
            .filter(|s| *s < 1 << 31)
            .ok_or_else(|| protocol("stream identifiers exhausted"))?;
        let mut call = Call {
            stream,
            headers: ResponseHeaders::default(),
            header_blocks: 0,
            body: Vec::new(),
            ended: false,
            send_window: self.peer_initial_window,
        };

        let path = format!("/{service}/{method}");
        let mut block = Vec::new();
        for (name, value) in [
            (&b":method"[..], &b"POST"[..]),
            (b":scheme", b"http"),
            (b":path", path.as_bytes()),
            (b":authority", b"localhost"),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
            (b"user-agent", b"crashcart"),
        ] {
            literal_without_indexing(&mut block, name, value);
        }
        let mut out = Vec::new();
        let mut chunks = block.chunks(self.peer_max_frame).peekable();
        let mut first = true;
        while let Some(chunk) = chunks.next() {
            let end_headers = if chunks.peek().is_none() {
                flag::END_HEADERS
            } else {
                0
            };
            let kind = if first {
                kind::HEADERS
            } else {
                kind::CONTINUATION
            };
            frame_into(&mut out, kind, end_headers, stream, chunk);
            first = false;
        }
        self.write(&out)?;

        let message = request.encode_to_vec();
        if message.len() > MAX_MESSAGE {
            return Err(protocol("request too large"));
        }
        let mut body = Vec::with_capacity(5 + message.len());
        body.push(0);
        body.extend_from_slice(&(message.len() as u32).to_be_bytes());
        body.extend_from_slice(&message);
        let mut sent = 0;
        while sent < body.len() && !call.ended {
            let allowed = self
                .send_window
                .min(call.send_window)
                .min(self.peer_max_frame as i64);
            if allowed <= 0 {
                // Wait for WINDOW_UPDATE (or an early answer).
                self.process_frame(&mut call)?;
                continue;
            }
            let end = body.len().min(sent + allowed as usize);
            let flags = if end == body.len() {
                flag::END_STREAM
            } else {
                0
            };
            let mut out = Vec::new();
            frame_into(&mut out, kind::DATA, flags, stream, &body[sent..end]);
            self.write(&out)?;
            self.send_window -= (end - sent) as i64;
            call.send_window -= (end - sent) as i64;
            sent = end;
        }

        while !call.ended {
            self.process_frame(&mut call)?;
        }
        self.give_back_window()?;
        finish(method, call)
    }

    /// Returns the connection window the call's DATA used.
    fn give_back_window(&mut self) -> Result<(), GrpcError> {
        if self.unacknowledged == 0 {
            return Ok(());
        }
        let mut out = Vec::new();
        frame_into(
            &mut out,
            kind::WINDOW_UPDATE,
            0,
            0,
            &self.unacknowledged.to_be_bytes(),
        );
        self.unacknowledged = 0;
        self.write(&out)
    }

    /// Reads one frame and acts on it.
    fn process_frame(&mut self, call: &mut Call) -> Result<(), GrpcError> {
        let (header, payload) = self.read_frame()?;
        match header.kind {
            kind::DATA => {
                self.unacknowledged = self
                    .unacknowledged
                    .checked_add(header.length as u32)
                    .filter(|n| *n <= RECEIVE_WINDOW)
                    .ok_or_else(|| protocol("DATA beyond the flow-control window"))?;
                if header.stream != call.stream {
                    // A stream of an earlier call, ended on our side: dropped.
                    return Ok(());
                }
                if call.header_blocks == 0 {
                    return Err(protocol("DATA before the response headers"));
                }
                let data = unpad(&header, &payload)?;
                if call.body.len() + data.len() > MAX_MESSAGE + 5 {
                    return Err(protocol(format!(
                        "a response larger than {MAX_MESSAGE} bytes"
                    )));
                }
                call.body.extend_from_slice(data);
                if header.flags & flag::END_STREAM != 0 {
                    call.ended = true;
                }
            }
            kind::HEADERS => {
                if header.stream == 0 {
                    return Err(protocol("HEADERS on stream 0"));
                }
                let mut block = unpad(&header, &payload)?.to_vec();
                let mut end_headers = header.flags & flag::END_HEADERS != 0;
                while !end_headers {
                    let (next, fragment) = self.read_frame()?;
                    if next.kind != kind::CONTINUATION || next.stream != header.stream {
                        return Err(protocol("a header block interrupted by another frame"));
                    }
                    if block.len() + fragment.len() > MAX_HEADER_BLOCK {
                        return Err(protocol(format!(
                            "a header block larger than {MAX_HEADER_BLOCK} bytes"
                        )));
                    }
                    block.extend_from_slice(&fragment);
                    end_headers = next.flags & flag::END_HEADERS != 0;
                }
                // Every block is decoded, ours or not: the HPACK table is the connection's.
                let ours = header.stream == call.stream;
                let fields = &mut call.headers;
                self.decoder
                    .decode_with_cb(&block, |name, value| {
                        if ours {
                            fields.take(name, value);
                        }
                    })
                    .map_err(|e| protocol(format!("HPACK: {e}")))?;
                if ours {
                    call.header_blocks += 1;
                    if header.flags & flag::END_STREAM != 0 {
                        call.ended = true;
                    } else if call.header_blocks > 1 {
                        return Err(protocol("trailers without END_STREAM"));
                    }
                }
            }
            kind::CONTINUATION => return Err(protocol("CONTINUATION without HEADERS")),
            kind::PUSH_PROMISE => return Err(protocol("PUSH_PROMISE, which we disabled")),
            kind::RST_STREAM => {
                let code = u32_at(&payload, 0, "RST_STREAM")?;
                if header.stream == call.stream {
                    return Err(GrpcError::Reset(code));
                }
            }
            kind::SETTINGS => {
                if header.stream != 0 {
                    return Err(protocol("SETTINGS on a stream"));
                }
                if header.flags & flag::ACK == 0 {
                    self.apply_settings(&payload, call)?;
                    let mut out = Vec::new();
                    frame_into(&mut out, kind::SETTINGS, flag::ACK, 0, &[]);
                    self.write(&out)?;
                }
            }
            kind::PING => {
                if payload.len() != 8 || header.stream != 0 {
                    return Err(protocol("a malformed PING"));
                }
                if header.flags & flag::ACK == 0 {
                    let mut out = Vec::new();
                    frame_into(&mut out, kind::PING, flag::ACK, 0, &payload);
                    self.write(&out)?;
                }
            }
            kind::GOAWAY => {
                let last = u32_at(&payload, 0, "GOAWAY")? & 0x7fff_ffff;
                let code = u32_at(&payload, 4, "GOAWAY")?;
                self.going_away = Some(last);
                if call.stream > last {
                    let debug = String::from_utf8_lossy(&payload[8..])
                        .chars()
                        .map(|c| if c.is_control() { '?' } else { c })
                        .take(256)
                        .collect();
                    return Err(GrpcError::GoAway { code, debug });
                }
            }
            kind::WINDOW_UPDATE => {
                let increment = i64::from(u32_at(&payload, 0, "WINDOW_UPDATE")? & 0x7fff_ffff);
                if increment == 0 {
                    return Err(protocol("a WINDOW_UPDATE of 0"));
                }
                let window = if header.stream == 0 {
                    &mut self.send_window
                } else if header.stream == call.stream {
                    &mut call.send_window
                } else {
                    return Ok(());
                };
                *window += increment;
                if *window > MAX_WINDOW {
                    return Err(protocol("a flow-control window past 2^31-1"));
                }
            }
            // PRIORITY and unknown frame types carry nothing for us.
            _ => {}
        }
        Ok(())
    }

    fn apply_settings(&mut self, payload: &[u8], call: &mut Call) -> Result<(), GrpcError> {
        if payload.len() % 6 != 0 {
            return Err(protocol("a SETTINGS frame of a length not a multiple of 6"));
        }
        for entry in payload.chunks_exact(6) {
            let id = u16::from_be_bytes([entry[0], entry[1]]);
            let value = u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]);
            match id {
                setting::INITIAL_WINDOW_SIZE => {
                    if i64::from(value) > MAX_WINDOW {
                        return Err(protocol("an initial window past 2^31-1"));
                    }
                    // The change applies to open streams too (RFC 9113 section 6.9.2).
                    call.send_window += i64::from(value) - self.peer_initial_window;
                    self.peer_initial_window = i64::from(value);
                }
                setting::MAX_FRAME_SIZE => {
                    if !(16_384..=16_777_215).contains(&value) {
                        return Err(protocol("a MAX_FRAME_SIZE out of range"));
                    }
                    // We never send more than we accept ourselves.
                    self.peer_max_frame = (value as usize).min(MAX_FRAME_SIZE);
                }
                setting::ENABLE_PUSH if value > 1 => {
                    return Err(protocol("ENABLE_PUSH other than 0 or 1"));
                }
                // HEADER_TABLE_SIZE limits a table our encoder never uses; the rest are
                // advisory or unknown.
                _ => {}
            }
        }
        Ok(())
    }

    /// Reads one frame, refusing one larger than [`MAX_FRAME_SIZE`] before reading its payload.
    fn read_frame(&mut self) -> Result<(FrameHeader, Vec<u8>), GrpcError> {
        let mut head = [0u8; 9];
        self.read_exact(&mut head)?;
        let header = FrameHeader::parse(&head);
        if header.length > MAX_FRAME_SIZE {
            return Err(protocol(format!(
                "a frame of {} bytes (at most {MAX_FRAME_SIZE})",
                header.length
            )));
        }
        let mut payload = vec![0; header.length];
        self.read_exact(&mut payload)?;
        Ok((header, payload))
    }

    fn remaining(&self) -> Result<Duration, GrpcError> {
        self.deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or(GrpcError::TimedOut(self.timeout))
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), GrpcError> {
        let mut filled = 0;
        while filled < buf.len() {
            let remaining = self.remaining()?;
            self.io.set_timeout(remaining).map_err(GrpcError::Io)?;
            match self.io.read(&mut buf[filled..]) {
                Ok(0) => {
                    return Err(GrpcError::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the runtime closed the connection",
                    )))
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(GrpcError::TimedOut(self.timeout))
                }
                Err(e) => return Err(GrpcError::Io(e)),
            }
        }
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), GrpcError> {
        let remaining = self.remaining()?;
        self.io.set_timeout(remaining).map_err(GrpcError::Io)?;
        self.io.write_all(bytes).map_err(|e| {
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) {
                GrpcError::TimedOut(self.timeout)
            } else {
                GrpcError::Io(e)
            }
        })
    }
}

/// Checks the ended call's status and decodes its message.
fn finish<Resp: prost::Message + Default>(method: &str, call: Call) -> Result<Resp, GrpcError> {
    let headers = call.headers;
    let Some(status) = headers.grpc_status else {
        return Err(match headers.http_status {
            Some(s) if s != b"200" => protocol(format!(
                "HTTP status {}",
                String::from_utf8_lossy(&s[..s.len().min(3)])
            )),
            _ => protocol("no grpc-status in the trailers"),
        });
    };
    let code: u32 = std::str::from_utf8(&status)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| protocol("a grpc-status that is not a number"))?;
    if code != 0 {
        return Err(GrpcError::Status {
            method: method.to_string(),
            code,
            message: printable_message(headers.grpc_message.as_deref().unwrap_or_default()),
        });
    }
    if !headers
        .content_type
        .as_deref()
        .is_some_and(|t| t.starts_with(b"application/grpc"))
    {
        return Err(protocol("a content-type other than application/grpc"));
    }
    let message = unary_message(&call.body)?;
    Resp::decode(message).map_err(|e| protocol(format!("{method} response: {e}")))
}

/// Appends a frame.
fn frame_into(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let header = FrameHeader {
        length: payload.len(),
        kind,
        flags,
        stream,
    };
    out.extend_from_slice(&header.encode());
    out.extend_from_slice(payload);
}

/// An HPACK "literal header field without indexing — new name" (RFC 7541 section 6.2.2), no
/// Huffman coding: the peer's dynamic table is never touched, so nothing about it needs
/// tracking.
fn literal_without_indexing(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0);
    for string in [name, value] {
        // Writing to a Vec cannot fail; the prefix is valid.
        let _ = encode_integer_into(string.len(), 7, 0, out);
        out.extend_from_slice(string);
    }
}

/// A big-endian `u32` at `at` of a control frame's payload.
fn u32_at(payload: &[u8], at: usize, what: &str) -> Result<u32, GrpcError> {
    payload
        .get(at..at + 4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| protocol(format!("a short {what} frame")))
}

#[cfg(test)]
pub(super) mod tests;
