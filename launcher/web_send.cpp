#include "launcher/web_send.hpp"

#include "common/address.hpp"
#include "common/mail/maildir_read.hpp"
#include "common/mail/mime_parse.hpp"
#include "launcher/mail_client.hpp"

namespace mailnet::launcher {

using json = nlohmann::json;

namespace {

std::pair<int, json> bad(const std::string& reason) { return {400, {{"error", reason}}}; }

struct bad_field : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// An address field: absent, one string (which may hold a comma-separated
// list) or an array of strings.
std::vector<std::string> address_field(const json& body, const char* field) {
  std::vector<std::string> out;
  if (!body.contains(field) || body[field].is_null()) return out;
  const json& v = body[field];
  if (v.is_string()) {
    if (!v.get<std::string>().empty()) out.push_back(v.get<std::string>());
  } else if (v.is_array()) {
    for (std::size_t i = 0; i < v.size(); ++i) {
      if (!v[i].is_string())
        throw bad_field(std::string(field) + "[" + std::to_string(i) + "]: must be a string (an address)");
      out.push_back(v[i].get<std::string>());
    }
  } else {
    throw bad_field(std::string(field) + ": must be an address, a comma-separated list or an array of addresses");
  }
  addresses_of(out, field);  // throws mail_error naming the field and the address
  return out;
}

std::string text_field(const json& body, const char* field) {
  if (!body.contains(field) || body[field].is_null()) return {};
  if (!body[field].is_string()) throw bad_field(std::string(field) + ": must be a string");
  return body[field].get<std::string>();
}

json recipients(const send_result& r) {
  json out = json::array();
  for (const auto& x : r.rcpts)
    out.push_back({{"address", x.address}, {"accepted", x.accepted}, {"queue_id", x.queue_id}, {"reply", x.reply}});
  return out;
}

}  // namespace

std::pair<int, json> send_from_json(const json& body, const resolver_settings& resolver,
                                    const std::set<std::string>& domains, std::chrono::milliseconds timeout) {
  if (!body.is_object())
    return bad("the body must be a JSON object with from, to, cc, bcc, subject, body, attachments");
  static const std::set<std::string> known = {"from", "to", "cc", "bcc", "subject", "body", "attachments", "via"};
  for (const auto& [key, value] : body.items())
    if (!known.count(key))
      return bad("unknown field '" + key + "' (known: from, to, cc, bcc, subject, body, attachments, via)");
  outgoing_mail mail;
  std::string via;
  try {
    mail.from = text_field(body, "from");
    if (mail.from.empty()) return bad("from: missing (the sender's address)");
    if (!parse_named_address(mail.from)) return bad("from: not a mail address: '" + mail.from + "'");
    mail.to = address_field(body, "to");
    mail.cc = address_field(body, "cc");
    mail.bcc = address_field(body, "bcc");
    if (mail.to.empty() && mail.cc.empty() && mail.bcc.empty())
      return bad("to: missing (give at least one recipient in to, cc or bcc)");
    mail.subject = text_field(body, "subject");
    mail.body = text_field(body, "body");
    if (body.contains("attachments") && !body["attachments"].is_null()) {
      const json& list = body["attachments"];
      if (!list.is_array()) return bad("attachments: must be an array of {name, content_type, data}");
      for (std::size_t i = 0; i < list.size(); ++i) {
        const std::string label = "attachments[" + std::to_string(i) + "]";
        const json& a = list[i];
        if (!a.is_object()) return bad(label + ": must be an object {name, content_type, data}");
        for (const auto& [key, value] : a.items())
          if (key != "name" && key != "content_type" && key != "data")
            return bad(label + ": unknown field '" + key + "' (known: name, content_type, data)");
        attachment_bytes att;
        if (!a.contains("name") || !a["name"].is_string() || a["name"].get<std::string>().empty())
          return bad(label + ".name: missing (the attachment's file name, a string)");
        att.name = a["name"].get<std::string>();
        if (a.contains("content_type") && !a["content_type"].is_null()) {
          if (!a["content_type"].is_string()) return bad(label + ".content_type: must be a string");
          att.content_type = a["content_type"].get<std::string>();
        }
        if (!a.contains("data") || !a["data"].is_string()) return bad(label + ".data: missing (the bytes, in base64)");
        auto data = node::decode_base64(a["data"].get<std::string>());
        if (!data) return bad(label + ".data: not valid base64");
        att.data = std::move(*data);
        mail.attachment_data.push_back(std::move(att));
      }
    }
    via = node::ascii_lower(text_field(body, "via"));
    if (via.size() > 1 && via.back() == '.') via.pop_back();
  } catch (const bad_field& e) {
    return bad(e.what());
  } catch (const mail_error& e) {
    return bad(e.what());
  }

  // The node: via's, else the sender's own, which must be in this network.
  const auto sender = parse_mailbox(parse_named_address(mail.from)->address);
  const std::string node = via.empty() ? node::ascii_lower(sender->domain) : via;
  if (!domains.count(node))
    return bad((via.empty() ? "from: the sender's domain " : "via: ") + node +
               " has no node in this network; give via, a domain of the network whose node takes the message");

  std::string message;
  try {
    message = build_mime(mail);
  } catch (const mail_error& e) {
    std::string reason = e.what();
    if (reason.starts_with("--")) reason.erase(0, 2);  // the command line's names of the fields
    return bad(reason);
  }
  mail_delivery d;
  try {
    d = deliver_mail(mail, message, resolver, node, nullptr, timeout);
  } catch (const mail_error& e) {
    return bad(e.what());
  } catch (const std::runtime_error& e) {
    return {503, {{"error", std::string("the node of ") + node + " cannot be found: " + e.what()}, {"node", node}}};
  }
  const auto& r = d.result;
  json doc = {{"node", node},
              {"address", d.target.to_string()},
              {"queue_id", r.queue_id},
              {"queue_ids", r.queue_ids},
              {"reply", r.reply},
              {"rcpts", recipients(r)},
              {"size", message.size()}};
  if (!r.connected) {
    doc["error"] = "the node of " + node + " (" + d.target.to_string() + ") does not answer: " + r.reply +
                   "; is it down? POST /api/v1/nodes/" + node + "/start starts it";
    return {503, doc};
  }
  if (!r.ok) {
    std::size_t refused = 0;
    for (const auto& x : r.rcpts) refused += x.accepted ? 0 : 1;
    doc["error"] = "refused by the node of " + node + ": " + r.reply +
                   (r.rcpts.empty() ? std::string()
                    : refused == r.rcpts.size()
                                    ? std::string(" (every recipient refused)")
                                    : " (" + std::to_string(refused) + " of " + std::to_string(r.rcpts.size()) +
                                          " recipients refused; the others got the message)");
    doc["ok"] = false;
    return {502, doc};
  }
  doc["ok"] = true;
  return {200, doc};
}

}  // namespace mailnet::launcher
