// A stored sweep's configuration, as the commands that act on a sweep by name read it back
// (`sweep retry|sync|status|cancel`, `fit --sweep`): defined in sweep_command.cc.
#pragma once

#include "isoflop/common/status.h"
#include "isoflop/store/store.h"
#include "isoflop/sweep/config.h"

namespace isoflop::cli {

// The sweep's file text and overrides as stored, its relative data paths resolved where it was
// first run, its run folders where they are; the parse error when the stored text no longer
// parses (a newer isoflop's key, say).
Result<sweep::SweepConfig> StoredSweepConfig(store::Store& db, const store::SweepRecord& sweep);

}  // namespace isoflop::cli
