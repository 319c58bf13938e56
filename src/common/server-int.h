/*
 * server-int.h - what the files of the server core share and daemons do
 * not see: the client list, connection set-up, the byte slots.
 */
#ifndef KETTLE_SERVER_INT_H
#define KETTLE_SERVER_INT_H

#include "server.h"

/* An immediate reply (or several in a row) parked behind a slower one. */
struct ks_bslot {
    ks_slot slot;
    ks_bslot *free_next;      /* srv->free_bslots */
    uint32_t n;               /* replies in out */
    kt_buf out;
};

/* Byte slots kept for reuse, at most. */
#define KS_FREE_BSLOTS_MAX 4096

/* The client list, least recently active first. */
void ks__list_append(ks_server *srv, ks_conn *c);
void ks__list_unlink(ks_server *srv, ks_conn *c);
/* A complete request arrived: c moves to the back of the list. */
void ks__touch(ks_conn *c);

/* Make a connection of s (callbacks, watermarks, reading per on_accept).
 * NULL when out of memory (s is reset then). */
ks_conn *ks__conn_new(ks_server *srv, kt_stream *s);
/* Watermarks from srv->high_water. */
void ks__conn_set_watermarks(ks_conn *c);
/* A connection's stream finished closing (server side bookkeeping). */
void ks__conn_gone(ks_server *srv);
/* The cron tick (server-lag.c): arm it; at each tick, measure how late it
 * ran and re-arm it. ks__lag_tick is true once every KS_CRON_TICKS ticks
 * (the idle sweep and the memory trim run then). */
#define KS_LAG_TICK KT_MSEC(100)
#define KS_CRON_TICKS 5
void ks__lag_start(ks_server *srv);
bool ks__lag_tick(ks_server *srv);
/* Close the metrics endpoint (ks_server_free). */
void ks__metrics_free(ks_server *srv);
/* The defer that lets the clients that yielded read again. */
void ks__resume_cb(kt_defer *d, void *arg);
/* Free the byte slots kept for reuse. */
void ks__bslots_free(ks_server *srv);

#endif
