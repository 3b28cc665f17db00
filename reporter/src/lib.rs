//! `reporter`: turns the event stream into what an advertiser looks at.
