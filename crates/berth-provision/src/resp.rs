//! A minimal Redis client (RESP2 over TCP): enough for AUTH and ACL commands.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    pub fn is_nil(&self) -> bool {
        matches!(self, Self::Bulk(None) | Self::Array(None))
    }
}

fn encode<S: AsRef<[u8]>>(args: &[S]) -> Vec<u8> {
    let mut buf = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        let a = a.as_ref();
        buf.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        buf.extend_from_slice(a);
        buf.extend_from_slice(b"\r\n");
    }
    buf
}

pub struct Connection {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Connection {
    pub fn connect(host: &str, port: u16, timeout: Duration) -> std::io::Result<Self> {
        use std::net::ToSocketAddrs;
        let addr = (host, port).to_socket_addrs()?.next().ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{host} has no address"),
            )
        })?;
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(Self {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        })
    }

    pub fn command<S: AsRef<[u8]>>(&mut self, args: &[S]) -> std::io::Result<Reply> {
        self.writer.write_all(&encode(args))?;
        self.read_reply()
    }

    /// Send every command in one write, then read their replies in order.
    pub fn pipeline<S: AsRef<[u8]>>(&mut self, commands: &[&[S]]) -> std::io::Result<Vec<Reply>> {
        let buf: Vec<u8> = commands.iter().flat_map(|c| encode(c)).collect();
        self.writer.write_all(&buf)?;
        commands.iter().map(|_| self.read_reply()).collect()
    }

    fn read_line(&mut self) -> std::io::Result<String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        Ok(line.trim_end_matches(['\r', '\n']).to_string())
    }

    fn read_reply(&mut self) -> std::io::Result<Reply> {
        let line = self.read_line()?;
        let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "malformed reply");
        let (kind, rest) = line.split_at_checked(1).ok_or_else(bad)?;
        Ok(match kind {
            "+" => Reply::Status(rest.to_string()),
            "-" => Reply::Error(rest.to_string()),
            ":" => Reply::Int(rest.parse().map_err(|_| bad())?),
            "$" => {
                let n: i64 = rest.parse().map_err(|_| bad())?;
                if n < 0 {
                    Reply::Bulk(None)
                } else {
                    let mut data = vec![0; n as usize + 2];
                    self.reader.read_exact(&mut data)?;
                    data.truncate(n as usize);
                    Reply::Bulk(Some(data))
                }
            }
            "*" => {
                let n: i64 = rest.parse().map_err(|_| bad())?;
                if n < 0 {
                    Reply::Array(None)
                } else {
                    let mut items = Vec::with_capacity(n as usize);
                    for _ in 0..n {
                        items.push(self.read_reply()?);
                    }
                    Reply::Array(Some(items))
                }
            }
            _ => return Err(bad()),
        })
    }
}
