//! A fake HTTP service for a test (a portal, a webhook receiver): an actix `App` served on
//! 127.0.0.1:0 from a thread of its own, with its own actix system, so that it answers even
//! while the test thread blocks on a child process.

/// Serves the `App` that `$app` (a closure, called once per worker) builds, with `$workers`
/// workers; evaluates to the address it listens on.
macro_rules! serve_on_thread {
    ($workers:expr, $app:expr) => {{
        let (tx, rx) = std::sync::mpsc::channel();
        let app = $app;
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let server = actix_web::HttpServer::new(app)
                    .workers($workers)
                    .disable_signals()
                    .bind("127.0.0.1:0")
                    .unwrap();
                tx.send(server.addrs()[0]).unwrap();
                let _ = server.run().await;
            });
        });
        rx.recv().unwrap()
    }};
}
pub(crate) use serve_on_thread;
