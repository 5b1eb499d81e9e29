// What every part of a running node shares: its configuration, logs, stores
// the disk thread pool and the group committer. Owned by node_service; parts hold a reference.
#pragma once

#include <atomic>

#include <boost/asio/awaitable.hpp>
#include <cstddef>
#include <functional>
#include <list>
#include <map>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "common/elastic_pool.hpp"
#include "common/event_log.hpp"
#include "common/passwords.hpp"
#include "common/topology.hpp"
#include "common/mail/durable_file.hpp"
#include "node/auth_service.hpp"
#include "node/fault_plan.hpp"
#include "node/maildir.hpp"
#include "node/smtp_protocol.hpp"
#include "common/mail/spool.hpp"

namespace mailnet::node {

class lazy_dkim;
class relay;
class tls_setup;
class resolver_client;

struct node_context {
  node_context(const topology& n, const domain_config& c, std::filesystem::path d, event_log& ev, event_log& tr,
               elastic_pool& pool, elastic_pool& attachments, group_committer& gc)
      : net(n), config(c), dir(std::move(d)), events(ev), transcript(tr), maildirs(dir / "mail"),
        queue(dir / "queue"), disk(pool), extraction(attachments), committer(gc) {}

  const topology& net;
  const domain_config& config;
  std::filesystem::path dir;  // <run>/<domain>
  event_log& events;          // node.log
  event_log& transcript;      // smtp.log
  maildir_store maildirs;
  spool queue;
  elastic_pool& disk;  // up to 4 threads, started as jobs need them
  // One thread, started at the first attachment, which loads the module and
  // saves every message's attachments in turn: neither a slow load nor a
  // large message holds up the disk jobs a 250 waits for, and no thread is
  // started while the loader is busy (glibc's pthread_create waits for a
  // dlopen under way: it would hold up the event loop).
  elastic_pool& extraction;
  // Jobs given to disk or extraction and not yet over: none once
  // the loop has stopped means the pool's threads are idle.
  std::atomic<std::size_t> disk_jobs{0};
  group_committer& committer;  // new messages: many per flush of the disk
  relay* relay_agent = nullptr;
  // Certificates and contexts for STARTTLS, both ways (smtp_channel.hpp);
  // null when the network has "tls": false.
  std::shared_ptr<tls_setup> tls;
  resolver_client* resolver = nullptr;  // the network's resolver (policy.require_fcrdns)
  // SPF, DKIM and DMARC on received mail (auth_service.hpp); empty under
  // policy.dmarc "off". Made at the first message to check, not at the
  // node's start: the libraries' handles and the checks' threads are
  // nothing an idle node needs. Called on the event loop only.
  std::function<auth_service&()> auth;
  // The submission listener's passwords (common/passwords.hpp), read at
  // start; and the AUTH failures per client address, which lengthen the
  // delay before each 535 (smtp_session.cpp), forgotten 5 minutes after the
  // last one or at a success from that address.
  std::vector<password_entry> passwords;
  struct auth_failure_record {
    std::size_t count = 0;
    std::chrono::steady_clock::time_point last{};
  };
  std::map<std::string, auth_failure_record> auth_failures;
  fault_plan faults;  // the topology's fault rules for this node (fault_plan.hpp)
  // Signs the domain's outgoing mail (lazy_dkim.hpp: the key is read at the
  // first message to sign); null when the domain has "dkim": false.
  std::shared_ptr<lazy_dkim> dkim;
  std::size_t active_sessions = 0;
  // A graceful stop has begun (SIGTERM): sessions answer 421 4.3.2 at their
  // next command, and each hook here wakes a session that waits for one.
  bool stopping = false;
  std::list<std::function<void()>> stop_hooks;

  // An id unique on this node across restarts: milliseconds since the epoch
  // in hex, then a counter.
  std::string new_id();

  // Makes the message durable for every recipient (Maildir for local ones,
  // the queue for the rest) and only then returns true: the session's 250
  // depends on it. The files are written by the group committer and made
  // durable together with the other sessions' messages of the same moment.
  // message: the wire form (CRLF), as the queue keeps it; each Maildir gets
  // it in Maildir form (maildir_form()). announce(ok) runs as soon as the
  // outcome is known, before the events of the delivery itself, so that the
  // caller's event (accepted, bounce_queued) comes first in node.log.
  // junk: every local copy goes into the mailbox's .Junk folder (a DMARC
  // quarantine under policy.dmarc "enforce"); the queue's copies are unchanged.
  boost::asio::awaitable<bool> commit(const envelope& env, std::string message, const std::string& id,
                                      std::function<void(bool ok)> announce, bool junk = false);

  // The checks of auth_service on its threads; the caller resumes on its own executor.
  boost::asio::awaitable<auth_results> authenticate(auth_request request);

  // Saves the attachments of the delivered message once on the extraction thread,
  // without waiting for it; logs event=attachments or event=attachment_error
  // for each mailbox. files: the copies, which share one file name;
  // message: as stored in them.
  void extract_later(const std::string& id, const std::vector<std::string>& mailboxes,
                     std::vector<std::filesystem::path> files, std::string message);

  // Runs blocking file work on the disk pool and resumes the caller on its
  // own executor; exceptions from work are rethrown to the caller.
  boost::asio::awaitable<void> on_disk(std::function<void()> work);

 private:
  std::size_t id_counter_ = 0;
};

}  // namespace mailnet::node
