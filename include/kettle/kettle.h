/*
 * kettle/kettle.h - everything libkettle offers, in one include.
 *
 * libkettle is a single-threaded reactor (epoll, io_uring or libevent),
 * with timers, callback-driven futures, byte streams, a RESP2 codec and a
 * latency histogram. See kettle/common.h for the error contract.
 */
#ifndef KETTLE_KETTLE_H
#define KETTLE_KETTLE_H

#include <kettle/common.h>
#include <kettle/log.h>
#include <kettle/loop.h>
#include <kettle/future.h>
#include <kettle/resp.h>
#include <kettle/stream.h>
#include <kettle/hist.h>

#endif
