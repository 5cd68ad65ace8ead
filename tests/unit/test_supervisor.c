/*  test_supervisor — starting, watching and stopping actors: a start failure is reported
    with the actor's message, an actor that ends by itself is seen, SIGTERM is seen, and
    actors stop in the reverse of their start order.
*/
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "supervisor.h"

typedef struct {
    const char *name;
    bool fail_to_start;
    char *stop_log;                 //  names appended here as actors stop
    char error [256];
} fake_args_t;

//  A fake actor: "DIE" makes it end by itself, "SAY" makes it send "HELLO".
static void
s_fake_actor (zsock_t *pipe, void *args_)
{
    fake_args_t *args = (fake_args_t *) args_;
    if (args->fail_to_start) {
        snprintf (args->error, sizeof args->error, "cannot open the thing");
        zsock_signal (pipe, 0);
        return;
    }
    zsock_signal (pipe, 0);
    bool asked_to_stop = false;
    while (true) {
        char *command = zstr_recv (pipe);
        if (!command || streq (command, "$TERM")) {
            asked_to_stop = true;
            zstr_free (&command);
            break;
        }
        bool die = streq (command, "DIE");
        if (streq (command, "SAY"))
            zstr_send (pipe, "HELLO");
        zstr_free (&command);
        if (die)
            break;
    }
    strcat (args->stop_log, args->name);
    if (!asked_to_stop)
        zstr_send (pipe, "STOPPED");
}

static void
test_start_watch_stop (void **state)
{
    (void) state;
    char stop_log [64] = "";
    fake_args_t a = { .name = "a", .stop_log = stop_log };
    fake_args_t b = { .name = "b", .stop_log = stop_log };
    fake_args_t c = { .name = "c", .stop_log = stop_log };
    fake_args_t broken = { .name = "x", .fail_to_start = true, .stop_log = stop_log };
    supervisor_t *supervisor = supervisor_new ();
    assert_non_null (supervisor);
    char message [256];
    assert_int_equal (supervisor_start (supervisor, "a", s_fake_actor, &a, a.error, message,
                                        sizeof message), 0);
    assert_int_equal (supervisor_start (supervisor, "b", s_fake_actor, &b, b.error, message,
                                        sizeof message), 0);
    assert_int_equal (supervisor_start (supervisor, "broken", s_fake_actor, &broken,
                                        broken.error, message, sizeof message), -1);
    assert_string_equal (message, "broken: cannot open the thing");
    assert_int_equal (supervisor_start (supervisor, "c", s_fake_actor, &c, c.error, message,
                                        sizeof message), 0);

    const char *name = NULL;
    char *text = NULL;
    int signal_number = 0;
    assert_int_equal (supervisor_wait (supervisor, 50, &name, &text, &signal_number),
                      SUPERVISOR_TIMEOUT);

    zstr_send (supervisor_actor (supervisor, "b"), "SAY");
    assert_int_equal (supervisor_wait (supervisor, 2000, &name, &text, &signal_number),
                      SUPERVISOR_MESSAGE);
    assert_string_equal (name, "b");
    assert_string_equal (text, "HELLO");
    zstr_free (&text);

    zstr_send (supervisor_actor (supervisor, "a"), "DIE");
    assert_int_equal (supervisor_wait (supervisor, 2000, &name, &text, &signal_number),
                      SUPERVISOR_ACTOR_STOPPED);
    assert_string_equal (name, "a");
    assert_string_equal (stop_log, "a");

    kill (getpid (), SIGTERM);
    assert_int_equal (supervisor_wait (supervisor, 2000, &name, &text, &signal_number),
                      SUPERVISOR_SIGNAL);
    assert_int_equal (signal_number, SIGTERM);

    //  Reverse order; "a" had already stopped and is only reaped.
    supervisor_destroy (&supervisor);
    assert_null (supervisor);
    assert_string_equal (stop_log, "acb");
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_start_watch_stop),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
