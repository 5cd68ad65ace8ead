/*  supervisor — starts zllm's actors in order, watches them, stops them in reverse order.
    See supervisor.h.
*/
#include "supervisor.h"
#include "zlog.h"

#include <signal.h>
#include <string.h>

#define MAX_ACTORS 64
#define POLL_SLICE_MS 50

typedef struct {
    char *name;
    zactor_t *actor;
} supervised_t;

struct _supervisor_t {
    supervised_t actors [MAX_ACTORS];
    size_t n_actors;
    zpoller_t *poller;              //  on every actor's pipe; rebuilt on each start
    sigset_t signals;
};

supervisor_t *
supervisor_new (void)
{
    supervisor_t *self = (supervisor_t *) calloc (1, sizeof (supervisor_t));
    if (!self)
        return NULL;
    //  Block the signals before CZMQ starts any thread, so that all inherit the mask.
    sigemptyset (&self->signals);
    sigaddset (&self->signals, SIGINT);
    sigaddset (&self->signals, SIGTERM);
    pthread_sigmask (SIG_BLOCK, &self->signals, NULL);
    zsys_handler_set (NULL);
    return self;
}

void
supervisor_destroy (supervisor_t **self_p)
{
    supervisor_t *self = *self_p;
    if (!self)
        return;
    zpoller_destroy (&self->poller);
    while (self->n_actors > 0) {
        supervised_t *supervised = &self->actors [--self->n_actors];
        zlog (ZLOG_DEBUG, "supervisor", 0, "stopping %s", supervised->name);
        zactor_destroy (&supervised->actor);
        free (supervised->name);
    }
    free (self);
    *self_p = NULL;
}

static int
s_rebuild_poller (supervisor_t *self)
{
    zpoller_destroy (&self->poller);
    self->poller = zpoller_new (NULL);
    if (!self->poller)
        return -1;
    for (size_t i = 0; i < self->n_actors; i++)
        zpoller_add (self->poller, self->actors [i].actor);
    return 0;
}

int
supervisor_start (supervisor_t *self, const char *name, zactor_fn handler, void *args,
                  const char *error, char *message, size_t message_size)
{
    if (self->n_actors == MAX_ACTORS) {
        snprintf (message, message_size, "too many actors");
        return -1;
    }
    zactor_t *actor = zactor_new (handler, args);
    if (!actor) {
        snprintf (message, message_size, "could not start the %s actor", name);
        return -1;
    }
    if (error [0]) {
        snprintf (message, message_size, "%s: %s", name, error);
        zactor_destroy (&actor);
        return -1;
    }
    self->actors [self->n_actors].name = strdup (name);
    self->actors [self->n_actors].actor = actor;
    self->n_actors++;
    return s_rebuild_poller (self);
}

zactor_t *
supervisor_actor (supervisor_t *self, const char *name)
{
    for (size_t i = 0; i < self->n_actors; i++)
        if (streq (self->actors [i].name, name))
            return self->actors [i].actor;
    return NULL;
}

static const char *
s_name_of (supervisor_t *self, void *actor)
{
    for (size_t i = 0; i < self->n_actors; i++)
        if (self->actors [i].actor == actor)
            return self->actors [i].name;
    return "?";
}

supervisor_event_t
supervisor_wait (supervisor_t *self, int timeout_ms, const char **name, char **message,
                 int *signal_number)
{
    int64_t deadline = timeout_ms < 0 ? INT64_MAX : zclock_mono () + timeout_ms;
    while (true) {
        struct timespec no_wait = { 0, 0 };
        int signal = sigtimedwait (&self->signals, NULL, &no_wait);
        if (signal > 0) {
            *signal_number = signal;
            return SUPERVISOR_SIGNAL;
        }
        int64_t left = deadline - zclock_mono ();
        if (left <= 0)
            return SUPERVISOR_TIMEOUT;
        int slice = (int) (left < POLL_SLICE_MS ? left : POLL_SLICE_MS);
        if (!self->poller) {
            zclock_sleep (slice);
            continue;
        }
        void *which = zpoller_wait (self->poller, slice);
        if (!which)
            continue;
        char *text = zstr_recv (which);
        *name = s_name_of (self, which);
        if (text && streq (text, "STOPPED")) {
            zstr_free (&text);
            //  Stop watching it: its pipe now only holds the exit signal, which
            //  zactor_destroy reads.
            zpoller_remove (self->poller, which);
            return SUPERVISOR_ACTOR_STOPPED;
        }
        if (text) {
            *message = text;
            return SUPERVISOR_MESSAGE;
        }
    }
}
