/*
 * state_int.h — helpers shared inside the state module (state.c, snapshot.c).
 * Not part of the contract; other modules use state.h and snapshot.h.
 */
#ifndef STATE_INT_H
#define STATE_INT_H

#include <stddef.h>

#define STATE_LOCK_FILE "sluice.lock"
#define STATE_RESTORE_MARK "sluice.restoring"

/* mkdir -p with mode 0700 for every directory created. 0 or SL_EIO/SL_EINVAL. */
int state__mkdir_p(const char *dir, char *errstr, size_t errsize);
/* Exclusive flock on dir/sluice.lock (writes our pid into it). Returns the fd
 * (close it to unlock) or SL_EBUSY ("state dir X is in use by pid N") / SL_EIO. */
int state__dir_lock(const char *dir, char *errstr, size_t errsize);

#endif
