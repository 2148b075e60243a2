package daemon

import (
	"log/slog"

	sd "github.com/coreos/go-systemd/v22/daemon"
)

// Notify sends state (e.g. sd.SdNotifyReady) to the service manager named
// by $NOTIFY_SOCKET; without it (not started by systemd with Type=notify)
// it does nothing. A failure is logged: the service manager then times the
// daemon out, which says more than failing here would.
func Notify(log *slog.Logger, state string) {
	sent, err := sd.SdNotify(false, state)
	switch {
	case err != nil:
		log.Warn("could not notify the service manager", "state", state, "err", err)
	case sent:
		log.Debug("notified the service manager", "state", state)
	}
}

// NotifyReady says READY=1: the daemon serves.
func NotifyReady(log *slog.Logger) { Notify(log, sd.SdNotifyReady) }

// NotifyStopping says STOPPING=1: the daemon is shutting down.
func NotifyStopping(log *slog.Logger) { Notify(log, sd.SdNotifyStopping) }
