//! Just enough HTTP/1.1 for stand-in servers on 127.0.0.1 (a webhook receiver, a fake model
//! provider): read one request, answer it, close.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};

/// One request as received.
#[derive(Debug, Clone)]
pub struct Request {
    /// `POST /hook HTTP/1.1`, trimmed.
    pub line: String,
    /// The body (`Content-Length` bytes, at most 1 MiB).
    pub body: Vec<u8>,
}

/// Reads one request from `stream`.
pub fn read_request(stream: &TcpStream) -> std::io::Result<Request> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = header.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length.min(1 << 20)];
    reader.read_exact(&mut body)?;
    Ok(Request {
        line: line.trim().to_string(),
        body,
    })
}

/// Answers with `status` (`200 OK`) and a JSON `body`, then the connection closes.
pub fn respond(mut stream: &TcpStream, status: &str, body: &str) {
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    );
}

/// A listener on an ephemeral loopback port and its `http://127.0.0.1:PORT` base URL.
pub fn loopback() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let url = format!("http://{}", listener.local_addr().unwrap());
    (listener, url)
}

/// A loopback port that was free a moment ago: bound to port 0 and released. Only for a
/// program that must be told its port before it binds it (another process may take the port
/// in between); a server of the test's own binds port 0 and keeps its listener instead.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_read_and_answered() {
        let (listener, url) = loopback();
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let request = read_request(&stream).unwrap();
            respond(&stream, "200 OK", "{}");
            request
        });
        let mut client = TcpStream::connect(url.trim_start_matches("http://")).unwrap();
        client
            .write_all(b"POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello")
            .unwrap();
        let mut answer = String::new();
        client.read_to_string(&mut answer).unwrap();
        let request = server.join().unwrap();
        assert_eq!(request.line, "POST /x HTTP/1.1");
        assert_eq!(request.body, b"hello");
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.ends_with("\r\n\r\n{}"), "{answer}");
    }
}
