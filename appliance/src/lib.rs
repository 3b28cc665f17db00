//! `appliance`: the bidder process. One pinned event loop per core, each owning its connections
//! and its shard; HTTP and routing are sans-IO so any driver (io_uring, epoll) carries them.
