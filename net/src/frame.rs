//! Length-prefixed frames: the only way bytes cross a link after TLS. This module owns the frame
//! layout, the hard frame size limit and every allocation made for incoming frames.
//!
//! A frame is a `u32` big-endian payload length followed by exactly that many payload bytes. The
//! length is untrusted: it is checked against the maximum ([`FRAME_BYTES_MAX`], or a smaller
//! limit the caller passes, such as the handshake's) *before* any byte is allocated for the
//! payload, and a zero length is invalid (no message encodes to zero bytes, so an empty frame is
//! never sent by an honest peer).
//!
//! Two readers share these rules:
//! - [`FrameDecoder`], pure and sans-IO: the driver pushes whatever bytes arrived and pulls
//!   complete frames. It is cancel-safe by construction (it owns its partial state) and is what
//!   tests and fuzz targets exercise.
//! - [`read_frame`] / [`write_frame`], async helpers over any tokio stream (the TLS stream in the
//!   node). `read_frame` is *not* cancel-safe: a future dropped mid-frame (for example the losing
//!   branch of `tokio::select!`) loses the bytes it had read and desynchronises the stream. Run it
//!   in a dedicated reader task, or use a [`FrameDecoder`] where cancellation is needed.
//!
//! Any error leaves the stream at an unknown position: the caller closes the link.

use tinychain_core::limits::MESSAGE_BYTES_MAX;
use tinychain_core::message::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bytes in a frame header (the big-endian payload length).
pub const FRAME_HEADER_BYTES: usize = 4;

/// The hard maximum payload length of any frame: the core's message limit. Limits passed to
/// [`FrameDecoder::new`] and [`read_frame`] are clamped to it.
pub const FRAME_BYTES_MAX: u32 = {
    assert!(MESSAGE_BYTES_MAX <= u32::MAX as u64, "the message limit must fit a u32 frame length");
    MESSAGE_BYTES_MAX as u32
};

/// A decoder's payload buffer starts at most this large and then doubles, never past the
/// announced length: memory follows the bytes that actually arrived, so a peer that announces
/// a large frame and sends nothing holds almost nothing.
const PAYLOAD_CAPACITY_INITIAL_BYTES: usize = 4 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame announces {length} bytes, above the {max}-byte maximum")]
    TooLarge { length: u64, max: u64 },
    #[error("frame announces an empty payload")]
    Empty,
    #[error("connection closed between frames")]
    Closed,
    #[error("i/o error ({kind:?}) on a frame: {reason}")]
    Io { kind: std::io::ErrorKind, reason: String },
    #[error("malformed frame payload: {reason}")]
    Malformed { reason: String },
}

impl From<std::io::Error> for FrameError {
    fn from(error: std::io::Error) -> FrameError {
        FrameError::Io { kind: error.kind(), reason: error.to_string() }
    }
}

/// Checks an announced payload length against the limit; returns it as a buffer length.
fn check_length(length: u32, frame_bytes_max: u32) -> Result<usize, FrameError> {
    if length == 0 {
        return Err(FrameError::Empty);
    }
    if length > frame_bytes_max {
        return Err(FrameError::TooLarge { length: u64::from(length), max: u64::from(frame_bytes_max) });
    }
    usize::try_from(length)
        .map_err(|_| FrameError::TooLarge { length: u64::from(length), max: u64::from(frame_bytes_max) })
}

/// Frames one payload: the 4-byte big-endian length, then the payload.
pub fn encode_frame(payload: &[u8]) -> Result<Vec<u8>, FrameError> {
    if payload.is_empty() {
        return Err(FrameError::Empty);
    }
    let length = u32::try_from(payload.len())
        .ok()
        .filter(|length| *length <= FRAME_BYTES_MAX)
        .ok_or(FrameError::TooLarge { length: payload.len() as u64, max: u64::from(FRAME_BYTES_MAX) })?;
    let mut bytes = Vec::with_capacity(FRAME_HEADER_BYTES + payload.len());
    bytes.extend_from_slice(&length.to_be_bytes());
    bytes.extend_from_slice(payload);
    Ok(bytes)
}

/// A message's framed bytes, ready to write to a link.
///
/// Panics if the message does not fit in a frame. That is a broken invariant, not bad input:
/// genesis validation caps a block at half the frame limit, sync responses are cut to
/// `SYNC_RESPONSE_BYTES_MAX`, and a message decoded from a frame re-encodes to the same bytes.
pub fn encode_message(message: &Message) -> Vec<u8> {
    encode_frame(&message.encode()).expect("every message the core builds fits in one frame")
}

/// Decodes a frame's payload as one message; the codec rejects trailing bytes.
///
/// The payload's own length is what bounds decoding memory: bincode 1.3.3 ignores its byte
/// limit when decoding from a slice (bincode-org/bincode#299), but never allocates a string or
/// byte array longer than the bytes present, and serde caps a sequence's preallocation. So the
/// length is checked here too, for payloads that did not come through a frame.
pub fn decode_message(payload: &[u8]) -> Result<Message, FrameError> {
    if payload.len() > FRAME_BYTES_MAX as usize {
        return Err(FrameError::TooLarge { length: payload.len() as u64, max: u64::from(FRAME_BYTES_MAX) });
    }
    Message::decode(payload).map_err(|error| FrameError::Malformed { reason: error.to_string() })
}

/// A pure, sans-IO frame decoder.
///
/// Driver contract: after each [`push`](FrameDecoder::push) of the bytes that arrived, call
/// [`next_frame`](FrameDecoder::next_frame) until it returns `Ok(None)` (more bytes needed) or an
/// error (close the link). The decoder holds at most one partial frame, whose buffer grows with
/// the bytes received and never past the announced length; a header above the limit is rejected
/// as soon as its 4 bytes arrive, before anything is allocated for it. Complete frames wait in
/// order until pulled, so a driver that pulls after every push holds no more than one push's
/// frames. Frames completed before an error are still returned, in order; then the error is
/// returned on every call, and bytes pushed after it are ignored.
pub struct FrameDecoder {
    frame_bytes_max: u32,
    header: [u8; FRAME_HEADER_BYTES],
    header_filled: usize,
    /// The announced payload length of the frame being received, once its header was accepted.
    payload_length: Option<usize>,
    payload: Vec<u8>,
    completed: std::collections::VecDeque<Vec<u8>>,
    failure: Option<FrameError>,
}

/// Lengths only: a payload can be megabytes of untrusted bytes, unfit for a log line.
impl std::fmt::Debug for FrameDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameDecoder")
            .field("frame_bytes_max", &self.frame_bytes_max)
            .field("header_filled", &self.header_filled)
            .field("payload_length", &self.payload_length)
            .field("payload_received", &self.payload.len())
            .field("completed_frames", &self.completed.len())
            .field("failure", &self.failure)
            .finish()
    }
}

impl Default for FrameDecoder {
    fn default() -> FrameDecoder {
        FrameDecoder::new(FRAME_BYTES_MAX)
    }
}

impl FrameDecoder {
    /// A decoder accepting payloads of up to `frame_bytes_max` bytes (clamped to
    /// [`FRAME_BYTES_MAX`]).
    pub fn new(frame_bytes_max: u32) -> FrameDecoder {
        FrameDecoder {
            frame_bytes_max: frame_bytes_max.min(FRAME_BYTES_MAX),
            header: [0; FRAME_HEADER_BYTES],
            header_filled: 0,
            payload_length: None,
            payload: Vec::new(),
            completed: std::collections::VecDeque::new(),
            failure: None,
        }
    }

    /// Feeds bytes received from the link, in order. Never fails: an invalid header is reported
    /// by [`next_frame`](FrameDecoder::next_frame).
    pub fn push(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && self.failure.is_none() {
            match self.payload_length {
                None => {
                    let take = (FRAME_HEADER_BYTES - self.header_filled).min(bytes.len());
                    self.header[self.header_filled..self.header_filled + take].copy_from_slice(&bytes[..take]);
                    self.header_filled += take;
                    bytes = &bytes[take..];
                    if self.header_filled == FRAME_HEADER_BYTES {
                        self.header_filled = 0;
                        match check_length(u32::from_be_bytes(self.header), self.frame_bytes_max) {
                            Ok(length) => self.payload_length = Some(length),
                            Err(error) => self.failure = Some(error),
                        }
                    }
                }
                Some(length) => {
                    let take = (length - self.payload.len()).min(bytes.len());
                    reserve_within(&mut self.payload, take, length);
                    self.payload.extend_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    if self.payload.len() == length {
                        self.completed.push_back(std::mem::take(&mut self.payload));
                        self.payload_length = None;
                    }
                }
            }
        }
    }

    /// Whether the decoder holds part of a frame (a header or a payload not yet complete): a
    /// stream that ends now ends inside a frame.
    pub fn is_inside_frame(&self) -> bool {
        self.header_filled > 0 || self.payload_length.is_some()
    }

    /// The next complete frame's payload, `Ok(None)` if more bytes are needed, or the error that
    /// ended the stream.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        if let Some(frame) = self.completed.pop_front() {
            return Ok(Some(frame));
        }
        match &self.failure {
            Some(error) => Err(error.clone()),
            None => Ok(None),
        }
    }
}

/// Makes room for `additional` more bytes in a payload buffer that will end at exactly
/// `length` bytes: capacity doubles as a `Vec`'s would, but is never reserved past `length`.
fn reserve_within(buffer: &mut Vec<u8>, additional: usize, length: usize) {
    let needed = buffer.len() + additional;
    assert!(needed <= length, "a frame's payload never exceeds its announced length");
    if needed <= buffer.capacity() {
        return;
    }
    let target = needed.max(buffer.capacity().saturating_mul(2)).max(PAYLOAD_CAPACITY_INITIAL_BYTES).min(length);
    buffer.reserve_exact(target - buffer.len());
}

/// Reads one frame and returns its payload. The announced length is checked against
/// `frame_bytes_max` (clamped to [`FRAME_BYTES_MAX`]) before the payload buffer, of exactly that
/// length, is allocated.
///
/// A clean end of stream before a header is [`FrameError::Closed`]; an end of stream inside a
/// frame is an [`FrameError::Io`] of kind `UnexpectedEof`. Not cancel-safe (see the module docs).
pub async fn read_frame<R: AsyncRead + Unpin + ?Sized>(
    reader: &mut R,
    frame_bytes_max: u32,
) -> Result<Vec<u8>, FrameError> {
    let frame_bytes_max = frame_bytes_max.min(FRAME_BYTES_MAX);
    let mut header = [0u8; FRAME_HEADER_BYTES];
    let mut header_filled = 0;
    while header_filled < FRAME_HEADER_BYTES {
        let read = reader.read(&mut header[header_filled..]).await?;
        if read == 0 {
            if header_filled == 0 {
                return Err(FrameError::Closed);
            }
            return Err(FrameError::Io {
                kind: std::io::ErrorKind::UnexpectedEof,
                reason: "stream ended inside a frame header".into(),
            });
        }
        header_filled += read;
    }
    let length = check_length(u32::from_be_bytes(header), frame_bytes_max)?;
    let mut payload = vec![0u8; length];
    reader.read_exact(&mut payload).await?;
    Ok(payload)
}

/// Writes one frame (header and payload in a single buffer, so a TLS stream sends them in the
/// same record) and flushes it.
pub async fn write_frame<W: AsyncWrite + Unpin + ?Sized>(writer: &mut W, payload: &[u8]) -> Result<(), FrameError> {
    let bytes = encode_frame(payload)?;
    writer.write_all(&bytes).await?;
    writer.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tinychain_core::testkit::{account_key, sign_transfer};
    use tinychain_core::types::{Checkpoint, Hash};

    fn status() -> Message {
        Message::Status {
            tip: Checkpoint { height: 7, hash: Hash([7; 32]) },
            finalized: Checkpoint { height: 3, hash: Hash([3; 32]) },
        }
    }

    fn transfer() -> Message {
        Message::Transfers(vec![sign_transfer(&account_key(0), "test-chain", account_key(1).address(), 5, 1, 0)])
    }

    /// Pushes `bytes` in the given pieces, pulling after each push as a driver would.
    fn decode_in_pieces(pieces: &[&[u8]]) -> Result<Vec<Vec<u8>>, FrameError> {
        let mut decoder = FrameDecoder::default();
        let mut frames = Vec::new();
        for piece in pieces {
            decoder.push(piece);
            while let Some(frame) = decoder.next_frame()? {
                frames.push(frame);
            }
        }
        Ok(frames)
    }

    #[test]
    fn frames_and_messages_round_trip() {
        let messages = [status(), transfer()];
        let mut stream = Vec::new();
        for message in &messages {
            stream.extend_from_slice(&encode_message(message));
        }
        let frames = decode_in_pieces(&[&stream]).unwrap();
        let decoded: Vec<Message> = frames.iter().map(|frame| decode_message(frame).unwrap()).collect();
        assert_eq!(decoded, messages);

        let framed = encode_frame(b"abc").unwrap();
        assert_eq!(framed, [0, 0, 0, 3, b'a', b'b', b'c'], "the length is a big-endian u32");
    }

    #[test]
    fn a_header_claiming_4_gib_is_rejected_before_allocating() {
        let mut decoder = FrameDecoder::default();
        decoder.push(&u32::MAX.to_be_bytes());
        let expected = FrameError::TooLarge { length: u64::from(u32::MAX), max: u64::from(FRAME_BYTES_MAX) };
        assert_eq!(decoder.next_frame(), Err(expected.clone()));
        assert_eq!(decoder.payload.capacity(), 0, "nothing was allocated for the payload");
        // The error sticks, and later bytes are ignored rather than buffered.
        decoder.push(&[1; 1024]);
        assert_eq!(decoder.next_frame(), Err(expected));
        assert_eq!(decoder.payload.capacity(), 0);
    }

    #[test]
    fn a_header_one_above_a_smaller_limit_is_rejected() {
        let mut decoder = FrameDecoder::new(1024);
        decoder.push(&1025u32.to_be_bytes());
        assert_eq!(decoder.next_frame(), Err(FrameError::TooLarge { length: 1025, max: 1024 }));
        let mut decoder = FrameDecoder::new(1024);
        decoder.push(&1024u32.to_be_bytes());
        assert_eq!(decoder.next_frame(), Ok(None), "exactly the limit is accepted");
    }

    #[test]
    fn limits_above_the_hard_maximum_are_clamped() {
        let mut decoder = FrameDecoder::new(u32::MAX);
        decoder.push(&(FRAME_BYTES_MAX + 1).to_be_bytes());
        assert!(matches!(decoder.next_frame(), Err(FrameError::TooLarge { .. })));
    }

    #[test]
    fn payload_memory_follows_the_bytes_received() {
        let mut decoder = FrameDecoder::default();
        decoder.push(&FRAME_BYTES_MAX.to_be_bytes());
        decoder.push(&[9; 10]);
        assert_eq!(decoder.next_frame(), Ok(None));
        assert!(
            decoder.payload.capacity() <= PAYLOAD_CAPACITY_INITIAL_BYTES,
            "a 16 MiB announcement reserves no 16 MiB"
        );

        let payload = vec![5u8; 100_000];
        let mut decoder = FrameDecoder::default();
        for piece in encode_frame(&payload).unwrap().chunks(777) {
            decoder.push(piece);
        }
        let frame = decoder.next_frame().unwrap().unwrap();
        assert_eq!(frame, payload);
        assert_eq!(frame.capacity(), payload.len(), "the buffer ends at exactly the announced length");
    }

    #[test]
    fn zero_length_is_rejected() {
        assert_eq!(decode_in_pieces(&[&[0, 0, 0, 0]]), Err(FrameError::Empty));
        assert_eq!(encode_frame(&[]), Err(FrameError::Empty));
    }

    #[test]
    fn oversized_payloads_are_not_framed() {
        let payload = vec![0u8; FRAME_BYTES_MAX as usize + 1];
        assert_eq!(
            encode_frame(&payload),
            Err(FrameError::TooLarge { length: u64::from(FRAME_BYTES_MAX) + 1, max: u64::from(FRAME_BYTES_MAX) })
        );
        assert!(matches!(decode_message(&payload), Err(FrameError::TooLarge { .. })), "nor decoded");
    }

    #[test]
    fn frames_split_at_any_boundary_decode_the_same() {
        let payloads: [&[u8]; 4] = [b"a", b"frame two", &[0xff; 300], b"z"];
        let mut stream = Vec::new();
        for payload in payloads {
            stream.extend_from_slice(&encode_frame(payload).unwrap());
        }
        let expected: Vec<Vec<u8>> = payloads.iter().map(|payload| payload.to_vec()).collect();
        for split in 0..=stream.len() {
            let (first, second) = stream.split_at(split);
            assert_eq!(decode_in_pieces(&[first, second]).unwrap(), expected, "split at {split}");
        }
        for piece_bytes in 1..=17 {
            let pieces: Vec<&[u8]> = stream.chunks(piece_bytes).collect();
            assert_eq!(decode_in_pieces(&pieces).unwrap(), expected, "pieces of {piece_bytes} bytes");
        }
    }

    #[test]
    fn frames_before_an_error_are_returned_then_the_error_sticks() {
        let mut stream = encode_frame(b"good").unwrap();
        stream.extend_from_slice(&[0, 0, 0, 0]);
        stream.extend_from_slice(&encode_frame(b"never seen").unwrap());
        let mut decoder = FrameDecoder::default();
        decoder.push(&stream);
        assert_eq!(decoder.next_frame(), Ok(Some(b"good".to_vec())));
        assert_eq!(decoder.next_frame(), Err(FrameError::Empty));
        assert_eq!(decoder.next_frame(), Err(FrameError::Empty));
    }

    #[test]
    fn trailing_garbage_in_a_message_payload_is_rejected() {
        let mut payload = status().encode();
        assert_eq!(decode_message(&payload), Ok(status()));
        payload.push(0);
        assert!(matches!(decode_message(&payload), Err(FrameError::Malformed { .. })));
        assert!(matches!(decode_message(&[0xff; 3]), Err(FrameError::Malformed { .. })));
    }

    #[test]
    fn garbage_payloads_never_panic() {
        // A fixed xorshift stream: deterministic, and no extra dependency.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let valid = transfer().encode();
        for round in 0..2_000 {
            let length = (next() % 256) as usize;
            let mut bytes: Vec<u8> = (0..length).map(|_| next() as u8).collect();
            if round % 2 == 0 {
                // Mutate a valid encoding instead: closer to what a fuzzer would find.
                bytes = valid.clone();
                let index = (next() as usize) % bytes.len();
                bytes[index] ^= (next() as u8) | 1;
                bytes.truncate((next() as usize) % (valid.len() + 1));
            }
            let _ = decode_message(&bytes);
            let mut decoder = FrameDecoder::new(512);
            decoder.push(&bytes);
            while let Ok(Some(_)) = decoder.next_frame() {}
        }
    }

    #[tokio::test]
    async fn frames_cross_an_async_stream() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let messages = [status(), transfer()];
        let writer = tokio::spawn(async move {
            for message in [status(), transfer()] {
                write_frame(&mut client, &message.encode()).await.unwrap();
            }
            // Dropping the writer closes the stream cleanly between frames.
        });
        for message in &messages {
            let payload = read_frame(&mut server, FRAME_BYTES_MAX).await.unwrap();
            assert_eq!(&decode_message(&payload).unwrap(), message);
        }
        assert_eq!(read_frame(&mut server, FRAME_BYTES_MAX).await, Err(FrameError::Closed));
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn read_frame_rejects_bad_headers_and_truncation() {
        async fn read_from(bytes: &[u8], frame_bytes_max: u32) -> Result<Vec<u8>, FrameError> {
            let (mut client, mut server) = tokio::io::duplex(1024);
            client.write_all(bytes).await.unwrap();
            drop(client);
            read_frame(&mut server, frame_bytes_max).await
        }
        assert_eq!(
            read_from(&u32::MAX.to_be_bytes(), FRAME_BYTES_MAX).await,
            Err(FrameError::TooLarge { length: u64::from(u32::MAX), max: u64::from(FRAME_BYTES_MAX) })
        );
        assert_eq!(read_from(&101u32.to_be_bytes(), 100).await, Err(FrameError::TooLarge { length: 101, max: 100 }));
        assert_eq!(read_from(&[0, 0, 0, 0], FRAME_BYTES_MAX).await, Err(FrameError::Empty));
        assert_eq!(read_from(&[], FRAME_BYTES_MAX).await, Err(FrameError::Closed));
        for truncated in [&[0, 0][..], &[0, 0, 0, 5, 1, 2][..]] {
            let result = read_from(truncated, FRAME_BYTES_MAX).await;
            assert!(
                matches!(result, Err(FrameError::Io { kind: std::io::ErrorKind::UnexpectedEof, .. })),
                "{truncated:?} gave {result:?}"
            );
        }
        assert_eq!(read_from(&[0, 0, 0, 2, 1, 2], FRAME_BYTES_MAX).await, Ok(vec![1, 2]));
    }
}
