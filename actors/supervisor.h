/*  supervisor — starts zllm's actors in order, watches them, stops them in reverse order.

    Each actor is a CZMQ actor whose args struct begins with its inputs and holds a
    `char error[256]` that the actor fills when it cannot start. supervisor_start runs
    the actor and, when error is set, stops it again and returns -1 with that message.

    The convention every zllm actor keeps: it signals its pipe once it is ready (or has
    failed to start), stops on "$TERM", and when it ends for any other reason it sends
    "STOPPED" on its pipe first. supervisor_wait returns the name of an actor that did so,
    so the program can log it and fail the requests that depended on it.

    Signals: supervisor_new blocks SIGINT and SIGTERM in the calling thread, before any
    actor thread exists, so every thread inherits the mask and only supervisor_wait sees
    them (CZMQ's own handlers are turned off with zsys_handler_set (NULL)).
*/
#ifndef ZLLM_SUPERVISOR_H
#define ZLLM_SUPERVISOR_H

#include <czmq.h>

typedef struct _supervisor_t supervisor_t;

supervisor_t *
    supervisor_new (void);

//  Stops every running actor, the last started first, and frees the supervisor.
void
    supervisor_destroy (supervisor_t **self_p);

//  Start an actor. error points at the args' error field. Returns 0, or -1 with the
//  actor's message copied into message.
int
    supervisor_start (supervisor_t *self, const char *name, zactor_fn handler, void *args,
                      const char *error, char *message, size_t message_size);

//  The actor started under that name, or NULL.
zactor_t *
    supervisor_actor (supervisor_t *self, const char *name);

typedef enum {
    SUPERVISOR_TIMEOUT = 0,         //  nothing happened within the timeout
    SUPERVISOR_SIGNAL = 1,          //  SIGINT or SIGTERM arrived
    SUPERVISOR_ACTOR_STOPPED = 2,   //  an actor ended by itself
    SUPERVISOR_MESSAGE = 3          //  an actor sent another message (in *message)
} supervisor_event_t;

//  Wait up to timeout_ms (-1: forever) for a signal or a message from an actor.
//  For SUPERVISOR_ACTOR_STOPPED and SUPERVISOR_MESSAGE, *name is the actor's name (owned
//  by the supervisor); for SUPERVISOR_MESSAGE, *message is the text (caller frees it with
//  zstr_free). For SUPERVISOR_SIGNAL, *signal_number says which.
supervisor_event_t
    supervisor_wait (supervisor_t *self, int timeout_ms, const char **name, char **message,
                     int *signal_number);

#endif
