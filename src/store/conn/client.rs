//! The store's blocking PostgreSQL client: `tokio-postgres` driven on a small runtime of its
//! own, as the `postgres` crate drives it, with the one thing that crate cannot do: send a
//! statement and the next one together ([`PgClient::execute_then`]), so a write batch's rows and
//! its COMMIT cost one round trip under the chain lock, not two.
//!
//! Every call blocks its thread until PostgreSQL answers, polling the connection meanwhile (and
//! keeping the notifications it brings for [`PgClient::wait_for_notification`]). Never call it
//! on an async worker: a runtime cannot block inside another.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::{pin, Pin};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{AsyncMessage, Error, Notification, Row, SimpleQueryMessage, Statement, ToStatement};

/// What a connection brings besides answers: notifications and notices.
type Messages = Pin<Box<dyn Stream<Item = Result<AsyncMessage, Error>> + Send>>;

/// A connection to PostgreSQL, used from one thread at a time.
pub struct PgClient {
    /// `None` only while the client is dropped (the connection is then shut down cleanly).
    client: Option<tokio_postgres::Client>,
    connection: Connection,
    notifications: VecDeque<Notification>,
    runtime: tokio::runtime::Runtime,
}

/// The connection's messages, and whether they have ended: once the stream has answered its
/// end or an error, it must not be polled again.
struct Connection {
    messages: Messages,
    ended: bool,
}

/// The connection's messages, as a stream.
struct ConnectionStream<S, T>(tokio_postgres::Connection<S, T>);

impl<S, T> Stream for ConnectionStream<S, T>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    type Item = Result<AsyncMessage, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_message(cx)
    }
}

/// Polls `step` on `runtime` until it is ready, polling the connection first at each wakeup so
/// the requests `step` queues are sent and their answers read. `step` is told the notifications
/// kept and whether the connection has ended (a request then fails by itself); a connection
/// that fails ends the wait with its error.
fn drive<T>(
    runtime: &tokio::runtime::Runtime,
    connection: &mut Connection,
    notifications: &mut VecDeque<Notification>,
    mut step: impl FnMut(&mut Context<'_>, &mut VecDeque<Notification>, bool) -> Poll<Result<T, Error>>,
) -> Result<T, Error> {
    runtime.block_on(std::future::poll_fn(|cx| {
        while !connection.ended {
            match connection.messages.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(AsyncMessage::Notification(n)))) => notifications.push_back(n),
                Poll::Ready(Some(Ok(AsyncMessage::Notice(notice)))) => {
                    tracing::debug!(notice = %notice.message(), "PostgreSQL notice");
                }
                Poll::Ready(Some(Ok(_))) => {}
                Poll::Ready(Some(Err(e))) => {
                    connection.ended = true;
                    return Poll::Ready(Err(e));
                }
                Poll::Ready(None) => connection.ended = true,
                Poll::Pending => break,
            }
        }
        step(cx, notifications, connection.ended)
    }))
}

impl PgClient {
    /// Connects with `config` over `tls`.
    pub fn connect(
        config: &tokio_postgres::Config,
        tls: tokio_postgres_rustls::MakeRustlsConnect,
    ) -> std::result::Result<PgClient, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("start the client's runtime: {e}"))?;
        let (client, connection) =
            runtime.block_on(config.connect(tls)).map_err(|e| crate::domain::error::with_causes(&e))?;
        Ok(PgClient {
            client: Some(client),
            connection: Connection { messages: Box::pin(ConnectionStream(connection)), ended: false },
            notifications: VecDeque::new(),
            runtime,
        })
    }

    /// Runs `future`, made from the client, to its end.
    fn run<'a, T, F>(&'a mut self, future: impl FnOnce(&'a tokio_postgres::Client) -> F) -> Result<T, Error>
    where
        F: Future<Output = Result<T, Error>> + 'a,
    {
        let PgClient { client, connection, notifications, runtime } = self;
        #[allow(clippy::expect_used)]
        let mut future = pin!(future(client.as_ref().expect("a client until dropped")));
        drive(runtime, connection, notifications, |cx, _, _| future.as_mut().poll(cx))
    }

    pub fn prepare(&mut self, query: &str) -> Result<Statement, Error> {
        self.run(|c| c.prepare(query))
    }

    pub fn execute<T>(&mut self, query: &T, params: &[&(dyn ToSql + Sync)]) -> Result<u64, Error>
    where
        T: ?Sized + ToStatement,
    {
        self.run(|c| c.execute(query, params))
    }

    pub fn query<T>(&mut self, query: &T, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, Error>
    where
        T: ?Sized + ToStatement,
    {
        self.run(|c| c.query(query, params))
    }

    pub fn query_one<T>(&mut self, query: &T, params: &[&(dyn ToSql + Sync)]) -> Result<Row, Error>
    where
        T: ?Sized + ToStatement,
    {
        self.run(|c| c.query_one(query, params))
    }

    pub fn simple_query(&mut self, query: &str) -> Result<Vec<SimpleQueryMessage>, Error> {
        self.run(|c| c.simple_query(query))
    }

    pub fn batch_execute(&mut self, query: &str) -> Result<(), Error> {
        self.run(|c| c.batch_execute(query))
    }

    /// Sends `statement` and, behind it without waiting for its answer, the simple query
    /// `then`: one round trip for both. `then` is sent only once `statement` has been (a
    /// statement refused before it was sent, as a parameter of the wrong type, is followed by
    /// nothing), and PostgreSQL runs it after `statement` either way: if `statement` failed,
    /// inside a transaction block `then` fails too and a COMMIT in it commits nothing. The
    /// first failure is the error.
    pub fn execute_then(
        &mut self,
        statement: &Statement,
        params: &[&(dyn ToSql + Sync)],
        then: &str,
    ) -> Result<u64, Error> {
        self.run(|c| async move {
            let mut first = pin!(c.execute(statement, params));
            // A prepared statement is sent by the first poll, which then waits for its answer.
            if let Poll::Ready(refused) = std::future::poll_fn(|cx| Poll::Ready(first.as_mut().poll(cx))).await {
                return refused;
            }
            let (first, then) = futures_util::future::join(first, c.batch_execute(then)).await;
            let rows = first?;
            then?;
            Ok(rows)
        })
    }

    /// Writes `rows` with the binary `COPY … FROM STDIN` `statement`, whose columns have `types`.
    pub fn copy_in<'r, const N: usize>(
        &mut self,
        statement: &Statement,
        types: &[Type],
        rows: impl Iterator<Item = [&'r (dyn ToSql + Sync); N]>,
    ) -> Result<u64, Error> {
        self.run(|c| async move {
            let sink = c.copy_in(statement).await?;
            let mut writer = pin!(tokio_postgres::binary_copy::BinaryCopyInWriter::new(sink, types));
            for row in rows {
                writer.as_mut().write(&row).await?;
            }
            writer.finish().await
        })
    }

    /// Waits until a notification arrives, `timeout` passes or the connection ends, and forgets
    /// every notification kept: whether there was any. An ended connection is found by the
    /// next request, which fails.
    pub fn wait_for_notification(&mut self, timeout: Duration) -> Result<bool, Error> {
        let PgClient { connection, notifications, runtime, .. } = self;
        let mut sleep = {
            let _entered = runtime.enter();
            Box::pin(tokio::time::sleep(timeout))
        };
        let arrived = drive(runtime, connection, notifications, |cx, kept, ended| {
            if !kept.is_empty() || ended {
                return Poll::Ready(Ok(!kept.is_empty()));
            }
            sleep.as_mut().poll(cx).map(|()| Ok(false))
        })?;
        notifications.clear();
        Ok(arrived)
    }

    /// Whether the connection has ended (the server went away, or a fatal error).
    pub fn is_closed(&self) -> bool {
        self.client.as_ref().is_none_or(tokio_postgres::Client::is_closed)
    }
}

impl Drop for PgClient {
    fn drop(&mut self) {
        // Without its client, the connection sends PostgreSQL a Terminate and ends; a server
        // gone silent is given a second, not forever.
        drop(self.client.take());
        let PgClient { connection, runtime, .. } = self;
        let mut deadline = {
            let _entered = runtime.enter();
            Box::pin(tokio::time::sleep(Duration::from_secs(1)))
        };
        runtime.block_on(std::future::poll_fn(|cx| loop {
            if connection.ended {
                return Poll::Ready(());
            }
            match connection.messages.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(_))) => {}
                Poll::Ready(None | Some(Err(_))) => connection.ended = true,
                Poll::Pending => return deadline.as_mut().poll(cx),
            }
        }));
    }
}
